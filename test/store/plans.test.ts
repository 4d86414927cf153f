// The hot path's statements must touch only the rows they serve, however long the history grows:
// a plan that scans work_orders or jobs makes every claim, batch or sweep cost as much as the
// whole table. Each statement is recorded as the real code sends it, then run again under
// EXPLAIN ANALYZE in a transaction that is rolled back, and every scan of those tables must have
// read at most a few batches' worth of rows. Checked on a small history with fresh statistics, where
// the planner was found to hash-join against whole tables, and on a larger one after ANALYZE.
import { expect, it } from "vitest";
import { type Database, GENERIC_SETTINGS, type Queryable, type Transactional } from "../../coordinator/db/database.ts";
import { jobApplyIn } from "../../coordinator/sql/job-apply.ts";
import { databaseNow, dueRetries, reapLost, reapOverdue, reapQueueTimeouts } from "../../coordinator/sql/reap.ts";
import { purgeExpired } from "../../coordinator/sql/retention.ts";
import { arrayLiteral } from "../../coordinator/sql/array-literal.ts";
import { workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { workOrderInsertMany, workOrderInsertRows } from "../../coordinator/sql/work-order-insert.ts";
import { forEachDatabase } from "../support/databases.ts";
import { connectAgent, order, useDatabase } from "./fixtures.ts";

/** `generic`: run under a generic plan (`Database.generic`), and so checked under one. */
type Statement = { text: string; params: unknown[]; generic: boolean };

const LARGE = ["work_orders", "jobs", "job_logs", "work_order_events"];
/**
 * What a scan may read: a batch (at most 100 rows), the pending backlog of the young history (150),
 * or the active jobs (about 200 here); never the history (thousands).
 */
const MAX_ROWS_READ = 500;

type Step = [string, (db: Database) => Promise<unknown>];

type PlanNode = {
  "Node Type": string;
  "Relation Name"?: string;
  "Index Name"?: string;
  "Actual Rows": number;
  "Actual Loops": number;
  "Rows Removed by Filter"?: number;
  "Rows Removed by Index Recheck"?: number;
  Plans?: PlanNode[];
};

function recording(db: Database, into: Statement[]): Database {
  const record = (q: Queryable, generic = false): Queryable => ({
    query: (text, params = []) => (into.push({ text, params, generic }), q.query(text, params)),
  });
  return {
    ...record(db),
    generic: { ...record(db.generic, true), transaction: (fn) => db.generic.transaction((tx) => fn(record(tx, true))) },
    kind: db.kind,
    orm: db.orm,
    transaction: (fn) => db.transaction((tx) => fn(record(tx))),
    close: db.close,
  };
}

let prepared = 0;

/** A parameter as an SQL literal, for EXECUTE: an array as the drivers send one. */
const literal = (value: unknown): string =>
  Array.isArray(value) ? literal(arrayLiteral(value)) : typeof value === "string" ? `'${value.replaceAll("'", "''")}'` : String(value);

/** EXPLAIN ANALYZE of the statement as it runs: with its parameters known, or under its generic plan. */
async function explain(tx: Queryable, { text, params, generic }: Statement): Promise<unknown> {
  const explained = "EXPLAIN (ANALYZE, FORMAT JSON)";
  if (!generic) return (await tx.query<{ "QUERY PLAN": unknown }>(`${explained} ${text}`, params))[0]!["QUERY PLAN"];
  // A name of its own: a PREPARE outlives the rollback, so one left by a failed EXPLAIN must not clash.
  const name = `generic_${++prepared}`;
  for (const [setting, value] of Object.entries(GENERIC_SETTINGS)) await tx.query(`SET LOCAL ${setting} = ${value}`);
  await tx.query(`PREPARE ${name} AS ${text}`);
  const [row] = await tx.query<{ "QUERY PLAN": unknown }>(`${explained} EXECUTE ${name}(${params.map(literal).join(", ")})`);
  await tx.query(`DEALLOCATE ${name}`);
  return row!["QUERY PLAN"];
}

/** Scans of a large table that read more rows than a batch could need. */
function wideScans(node: PlanNode): string[] {
  const read = (node["Actual Rows"] + (node["Rows Removed by Filter"] ?? 0) + (node["Rows Removed by Index Recheck"] ?? 0)) * node["Actual Loops"];
  const own =
    node["Relation Name"] !== undefined && LARGE.includes(node["Relation Name"]) && read > MAX_ROWS_READ
      ? [`${node["Node Type"]} on ${node["Relation Name"]}${node["Index Name"] ? ` using ${node["Index Name"]}` : ""} read ${read} rows`]
      : [];
  return [...own, ...(node.Plans ?? []).flatMap(wideScans)];
}

class Rollback extends Error {}

/** What `fn` returns, with the transaction's effects rolled back. */
async function rolledBack<T>(db: Transactional, fn: (tx: Queryable) => Promise<T>): Promise<T> {
  let result: T | undefined;
  await db
    .transaction(async (tx) => {
      result = await fn(tx);
      throw new Rollback();
    })
    .catch((error) => {
      if (!(error instanceof Rollback)) throw error;
    });
  return result!;
}

/** The plan of EXPLAIN's JSON, which a driver may hand over as text. */
const planOf = (json: unknown): PlanNode => ((typeof json === "string" ? JSON.parse(json) : json) as { Plan: PlanNode }[])[0]!.Plan;

/** The statement's plan as it ran, with its effects rolled back. */
const analyzed = (db: Database, statement: Statement) => rolledBack(db, async (tx) => planOf(await explain(tx, statement)));

forEachDatabase("hot-path query plans", (kind) => {
  const db = useDatabase(kind);

  it("read only the rows they serve, on a young history and on an analyzed older one", async () => {
    // Histories like real ones: most jobs finished, a hundred claimed, a backlog pending (small in
    // the young one, where the claim may fairly read all of it).
    const agent = await connectAgent(db(), "planner", { pool: "plans" });
    const message = (jobId: string, seq: number) => ({
      agentId: agent.agentId,
      message:
        seq === 1
          ? { type: "job.started" as const, jobId, seq }
          : seq === 2
            ? { type: "job.log" as const, jobId, seq, data: "a line\n" }
            : { type: "job.finished" as const, jobId, seq, outcome: "succeeded" as const, exitCode: 0 },
    });
    const grow = async (orders: number, finished: number) => {
      await workOrderInsertMany(db(), Array.from({ length: orders }, () => order({ selector: "pool=plans" })));
      for (let claimed = 0; claimed < finished + 100; claimed += 1_000) await workOrderClaim(db(), agent, Math.min(1_000, finished + 100 - claimed));
      const fresh = await db().query<{ id: string }>(`SELECT id::text AS id FROM jobs WHERE state = 'claimed' ORDER BY id`);
      const done = fresh.slice(0, finished).map((j) => j.id);
      for (let i = 0; i < done.length; i += 2_000) {
        await db().transaction((tx) => jobApplyIn(tx, done.slice(i, i + 2_000).flatMap((id) => [message(id, 1), message(id, 2), message(id, 3)])));
      }
      return fresh.slice(finished).map((j) => j.id);
    };

    const ageEnded = (n: number) =>
      db().query(
        `UPDATE work_orders SET updated_at = now() - interval '40 days'
         WHERE id IN (SELECT id FROM work_orders WHERE state = 'succeeded' ORDER BY id LIMIT $1)`,
        [n],
      );

    for (const [orders, finished, analyze] of [
      [2_150, 2_000, false],
      [20_000, 18_000, true],
    ] as const) {
      const claimed = await grow(orders, finished);
      // Work addressed to the agent, waiting: the claim must reach the few it takes through its
      // index. (Only once analyzed: 1,000 enqueues make the coordinator analyze the table.)
      if (analyze) await workOrderInsertMany(db(), Array.from({ length: 1_000 }, () => order({ selector: "pool=plans", agent: agent.name })));
      if (analyze) await db().query("ANALYZE");
      const now = await databaseNow(db());
      const due: Step = ["retention", async (d) => (await ageEnded(1_500), purgeExpired(d, 30))];
      const steps: Step[] = [
        ["claim", (d) => workOrderClaim(d.generic, agent, 5)],
        ["single enqueue", (d) => workOrderInsertRows(d, [order({ selector: "pool=plans" })])],
        ["single enqueue, claimed for its agent", (d) => workOrderInsertRows(d, [order({ selector: "pool=plans" })], [agent.agentId])],
        ["job messages", (d) => d.generic.transaction((tx) => jobApplyIn(tx, claimed.slice(0, 10).map((id) => message(id, 1))))],
        ["lost jobs", reapLost],
        ["overdue jobs", (d) => reapOverdue(d, 30)],
        ["queue timeouts", reapQueueTimeouts],
        ["due retries", (d) => dueRetries(d, now, now)],
        ["retention, nothing due", (d) => purgeExpired(d, 30)],
        // A pass deletes a thousand work orders; the statements are explained on the 500 due after
        // it. Only once analyzed: on the young history Postgres fairly reads its thousand jobs whole
        // rather than look up a hundred work orders' (retention runs once a minute, off the hot path).
        ...(analyze ? [due] : []),
      ];
      for (const [step, run] of steps) {
        const statements: Statement[] = [];
        await run(recording(db(), statements));
        expect(statements.length, step).toBeGreaterThan(0);
        for (const statement of statements) {
          const label = `${step} (${orders} work orders${analyze ? ", analyzed" : ""}${statement.generic ? ", generic plan" : ""}): ${statement.text.trim().slice(0, 50)}`;
          expect(wideScans(await analyzed(db(), statement)), label).toEqual([]);
        }
      }
    }
  }, 120_000);
});

forEachDatabase("generic plans made on a young database", (kind) => {
  const db = useDatabase(kind);

  it("read only the rows they serve once the tables have grown, with no ANALYZE since", async () => {
    // A generic plan is made once per connection and kept until a table it reads is analyzed
    // again. Made while jobs held a few rows, a plan free to scan it whole did, and went on doing
    // so as it grew. Here the hot path's generic statements are prepared on one connection of the
    // generic pool, as set for it, while the tables are young, and run again on it once they have
    // grown.
    const agent = await connectAgent(db(), "young", { pool: "plans" });
    await workOrderInsertMany(db(), Array.from({ length: 20 }, () => order({ selector: "pool=plans" })));
    const jobIds = (await workOrderClaim(db(), agent, 10)).map((job) => job.jobId);
    const recorded: Statement[] = [];
    const recorder = recording(db(), recorded);
    await workOrderClaim(recorder.generic, agent, 5);
    await workOrderInsertRows(recorder, [order({ selector: "pool=plans" })]);
    await workOrderInsertRows(recorder, [order({ selector: "pool=plans", idempotencyKey: "young" })]);
    await recorder.generic.transaction((tx) =>
      jobApplyIn(
        tx,
        jobIds.flatMap((jobId) => [
          { agentId: agent.agentId, message: { type: "job.started" as const, jobId, seq: 1 } },
          { agentId: agent.agentId, message: { type: "job.finished" as const, jobId, seq: 2, outcome: "succeeded" as const, exitCode: 0 } },
        ]),
      ),
    );
    const statements = recorded.filter((statement) => statement.generic);
    expect(statements.length).toBeGreaterThanOrEqual(5);
    const names = statements.map(() => `young_${++prepared}`);
    const execute = (i: number) => `EXECUTE ${names[i]}(${statements[i]!.params.map(literal).join(", ")})`;
    const scans = await rolledBack(db().generic, async (tx) => {
      for (const [i, { text }] of statements.entries()) {
        await tx.query(`PREPARE ${names[i]} AS ${text}`);
        await tx.query(`EXPLAIN ${execute(i)}`);
      }
      await workOrderInsertMany(tx, Array.from({ length: 3_000 }, () => order({ selector: "pool=plans" })));
      for (let i = 0; i < 3; i++) await workOrderClaim(tx, agent, 1_000);
      const found: string[] = [];
      for (const [i, { text }] of statements.entries()) {
        const [row] = await tx.query<{ "QUERY PLAN": unknown }>(`EXPLAIN (ANALYZE, FORMAT JSON) ${execute(i)}`);
        found.push(...wideScans(planOf(row!["QUERY PLAN"])).map((scan) => `${text.trim().slice(0, 50)}: ${scan}`));
        await tx.query(`DEALLOCATE ${names[i]}`);
      }
      return found;
    });
    expect(scans).toEqual([]);
  }, 60_000);
});

forEachDatabase("the claim's lookup of a run to adopt", (kind) => {
  const db = useDatabase(kind);

  it("is made for retries only, so a plan that scans jobs costs first attempts nothing", async () => {
    // A generic plan is made once and kept until a table it reads is analyzed again; one made while
    // jobs was small looks it up by a scan of the table, once per row claimed, however large it grew
    // since. Index scans are turned off here to stand for such a plan.
    const agent = await connectAgent(db(), "first-attempts", { pool: "plans" });
    const statements: Statement[] = [];
    await workOrderClaim(recording(db(), statements).generic, agent, 5);
    const plan = await rolledBack(db(), async (tx) => {
      await workOrderInsertMany(tx, Array.from({ length: 2_010 }, () => order({ selector: "pool=plans" })));
      for (let i = 0; i < 2; i++) await workOrderClaim(tx, agent, 1_000);
      for (const scan of ["indexscan", "indexonlyscan", "bitmapscan"]) await tx.query(`SET LOCAL enable_${scan} = off`);
      return planOf(await explain(tx, statements[0]!));
    });
    expect(wideScans(plan).filter((scan) => / on jobs\b/.test(scan))).toEqual([]);
  });
});

forEachDatabase("a single enqueue's plan", (kind) => {
  const db = useDatabase(kind);

  it("is generic, with an idempotency key or without: a lone order's custom plan was made afresh at every call", async () => {
    const statements: Statement[] = [];
    await workOrderInsertRows(recording(db(), statements), [order({ selector: "pool=plans" }), order({ selector: "pool=plans" })]);
    await workOrderInsertRows(recording(db(), statements), [order({ selector: "pool=plans", idempotencyKey: "plans-1" })]);
    await workOrderInsertRows(recording(db(), statements), [order({ selector: "pool=plans", idempotencyKey: "plans-1" })]);
    expect(statements.map((s) => s.generic)).toEqual([true, true, true, true]);
  });
});
