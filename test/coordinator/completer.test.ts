// The completer batches job messages into shared transactions; these are its promises.
import { afterAll, beforeAll, expect, test } from "vitest";
import { Completer } from "../../coordinator/completer.ts";
import type { Database } from "../../coordinator/db/database.ts";
import { openDatabase } from "../../coordinator/db/database.ts";
import { logRead } from "../../coordinator/sql/log-read.ts";
import { workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { commits, commitsOverhead, connectAgent, order, workOrderInsert } from "../store/fixtures.ts";

let db: Database;

beforeAll(async () => {
  db = await openDatabase({ kind: "pglite", dataDir: ":memory:" });
});

afterAll(async () => db?.close());

async function claimedJobs(pool: string, n: number) {
  const agent = await connectAgent(db, pool, { pool });
  for (let i = 0; i < n; i++) await workOrderInsert(db, order({ selector: `pool=${pool}` }));
  return { agent, jobs: await workOrderClaim(db, agent, n) };
}

test("messages from many jobs share few commits, and each job's messages apply in order", async () => {
  const { agent, jobs } = await claimedJobs("batch", 20);
  const completer = new Completer(db, { delayMs: 5, maxBatch: 1000 });
  const overhead = await commitsOverhead(db);
  const before = await commits(db);
  const results = await Promise.all(
    jobs.flatMap((job) => [
      completer.apply(agent.agentId, { type: "job.started", jobId: job.jobId, seq: 1 }),
      ...Array.from({ length: 10 }, (_, i) => completer.apply(agent.agentId, { type: "job.log", jobId: job.jobId, seq: i + 2, data: `line ${i}\n` })),
      completer.apply(agent.agentId, { type: "job.finished", jobId: job.jobId, seq: 12, outcome: "succeeded", exitCode: 0 }),
    ]),
  );
  expect(results.every((r) => r.kind === "applied")).toBe(true);
  // All 240 were queued before the first flush: one batch, one commit.
  expect((await commits(db)) - before - overhead).toBe(1);
  for (const job of jobs) {
    const log = (await logRead(db, job.jobId, 0)).map((s) => s.data).join("");
    expect(log).toBe(Array.from({ length: 10 }, (_, i) => `line ${i}\n`).join(""));
  }
});

test("a batch runs under a generic plan: a small one's custom plan was made afresh each time", async () => {
  const { agent, jobs } = await claimedJobs("generic", 1);
  const modes: string[] = [];
  const mode = "SELECT current_setting('plan_cache_mode') AS mode";
  const noted = (run: Database["transaction"]): Database["transaction"] => (fn) => run(async (tx) => (modes.push((await tx.query<{ mode: string }>(mode))[0]!.mode), fn(tx)));
  const watched: Database = { ...db, transaction: noted(db.transaction), generic: { ...db.generic, transaction: noted(db.generic.transaction) } };
  const result = await new Completer(watched, { delayMs: 1 }).apply(agent.agentId, { type: "job.started", jobId: jobs[0]!.jobId, seq: 1 });
  expect(result.kind).toBe("applied");
  expect(modes).toEqual(["force_generic_plan"]);
});

test("a message that fails does not hold back the others in its batch", async () => {
  const { agent, jobs } = await claimedJobs("poison", 2);
  // A chunk already stored where the next one belongs: the batch's write fails on the log's key.
  await db.query(`INSERT INTO job_logs (job_id, "offset", data) VALUES ($1, 0, 'squatter')`, [jobs[1]!.jobId]);
  const completer = new Completer(db, { delayMs: 5, maxBatch: 1000 });
  const [good, bad, after] = await Promise.allSettled([
    completer.apply(agent.agentId, { type: "job.log", jobId: jobs[0]!.jobId, seq: 1, data: "fine\n" }),
    completer.apply(agent.agentId, { type: "job.log", jobId: jobs[1]!.jobId, seq: 1, data: "collides\n" }),
    completer.apply(agent.agentId, { type: "job.log", jobId: jobs[0]!.jobId, seq: 2, data: "still fine\n" }),
  ]);
  expect(good).toMatchObject({ status: "fulfilled", value: { kind: "applied" } });
  expect(bad.status).toBe("rejected");
  expect(after).toMatchObject({ status: "fulfilled", value: { kind: "applied" } });
  expect((await logRead(db, jobs[0]!.jobId, 0)).map((s) => s.data).join("")).toBe("fine\nstill fine\n");
});

test("output holding NUL characters is stored with U+FFFD in their place, and the offsets follow what is stored", async () => {
  const { agent, jobs } = await claimedJobs("nul", 1);
  const completer = new Completer(db, { delayMs: 5, maxBatch: 1000 });
  const jobId = jobs[0]!.jobId;
  const results = await Promise.all([
    completer.apply(agent.agentId, { type: "job.log", jobId, seq: 1, data: "a\u0000b\n" }),
    completer.apply(agent.agentId, { type: "job.status", jobId, seq: 2, status: "step\u0000" }),
    completer.apply(agent.agentId, { type: "job.log", jobId, seq: 3, data: "next\n" }),
  ]);
  expect(results.map((r) => r.kind)).toEqual(["applied", "applied", "applied"]);
  const chunks = await logRead(db, jobId, 0);
  expect(chunks.map((c) => c.data).join("")).toBe("a\uFFFDb\nnext\n");
  expect(chunks.map((c) => String(c.offset))).toEqual(["0", String(Buffer.byteLength("a\uFFFDb\n"))]);
});

test("when the database is gone, every waiting message is refused, none acknowledged: the agent resends them", async () => {
  const lost = await openDatabase({ kind: "pglite", dataDir: ":memory:" });
  const agent = await connectAgent(lost, "doomed", { pool: "gone" });
  await workOrderInsert(lost, order({ selector: "pool=gone" }));
  const [job] = await workOrderClaim(lost, agent, 1);
  const completer = new Completer(lost, { delayMs: 20, maxBatch: 1000 });
  const pending = [1, 2, 3].map((seq) => completer.apply(agent.agentId, { type: "job.log", jobId: job!.jobId, seq, data: `${seq}\n` }));
  await lost.close();
  const settled = await Promise.allSettled(pending);
  expect(settled.map((s) => s.status)).toEqual(["rejected", "rejected", "rejected"]);
});

/** A completer whose database is held (PGlite has one connection) while 4 MiB of log text is submitted. */
async function congestedCompleter(pool: string, maxReliefWaitMs: number) {
  const { agent, jobs } = await claimedJobs(pool, 1);
  const jobId = jobs[0]!.jobId;
  const completer = new Completer(db, { delayMs: 1, maxReliefWaitMs });
  let release!: () => void;
  const held = db.transaction(() => new Promise<void>((resolve) => (release = resolve)));
  const chunk = "z".repeat(256 * 1024);
  const applied = Array.from({ length: 16 }, (_, i) => completer.apply(agent.agentId, { type: "job.log", jobId, seq: i + 1, data: chunk }));
  await new Promise((r) => setTimeout(r, 20));
  expect(completer.congested).toBe(true);
  const all = async () => expect((await Promise.all(applied)).every((r) => r.kind === "applied")).toBe(true);
  return { completer, jobId, release: async () => (release(), await held), all };
}

test("past a few MiB of log text waiting it is congested, and relieved once the database has worked it down", async () => {
  const { completer, jobId, release, all } = await congestedCompleter("congested", 60_000);
  let relievedAt = -1;
  const relieved = completer.relieved().then(async () => (relievedAt = (await logRead(db, jobId, 0)).length));
  await new Promise((r) => setTimeout(r, 50));
  expect(relievedAt).toBe(-1);
  await release();
  await relieved;
  // Relieved as the database caught up: some of the log written, not necessarily all of it.
  expect(relievedAt).toBeGreaterThan(0);
  expect(completer.congested).toBe(false);
  await all();
  await expect(completer.relieved()).resolves.toBeUndefined();
});

test("relief comes after its longest wait even while the database is still held, so paused sockets are read again", async () => {
  const { completer, release, all } = await congestedCompleter("stalled", 100);
  await completer.relieved();
  expect(completer.congested).toBe(true);
  await release();
  await all();
});
