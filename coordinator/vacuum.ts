// Vacuums the coordinator's tables where nothing else would: PGlite has no autovacuum (it runs no
// background process), nor has a server with `autovacuum = off`. Unvacuumed, every row version a
// claim or an ending replaces stays where it was. The pending index keeps an entry for each work
// order ever claimed, which every claim walks past: in the benchmark's scenario 10, a claim on
// PGlite cost 1.31-1.58× as much over the last 60,000 of 200,000 jobs as over the first 60,000
// (four runs). The space retention frees is never used again,
// and transaction ids are never frozen: some two billion transactions on, rows never frozen would
// seem written in the future, and vanish (PGlite, a standalone backend, only warns as that nears,
// where a server stops taking writes). So each run also freezes any table of the database,
// the catalogs too, whose oldest unfrozen transaction id is `freezeAge` old, as autovacuum would
// however it is set (Postgres's own defaults: a plain vacuum freezes at 150 million, autovacuum
// forces one at 200 million). A run is due once the work orders changed here come to a
// tenth of the table (and a floor), so that its cost, which grows with the table, stays in
// proportion to what it cleans; `SKIP_LOCKED` passes over a table another replica is vacuuming.
import type { Bus } from "./bus.ts";
import type { Database, Queryable } from "./db/database.ts";
import { Upkeep, type UpkeepOptions } from "./upkeep.ts";

/** The coordinator's tables, each with the order its newest rows come first in, along an index. */
const TABLES: Record<string, string> = {
  work_orders: "id DESC",
  jobs: "id DESC",
  work_order_events: "work_order_id DESC, id DESC",
  job_logs: 'job_id DESC, "offset" DESC',
  agents: "id DESC",
  tokens: "id DESC",
};
// A table is left alone while it is under ten pages, or holds under a hundred live rows (retention
// may have deleted every one of a table still past ten pages): vacuumed, the planner would know it
// as that small, and a plan made then (a prepared statement's, kept) would scan it however large it
// grew. Never vacuumed, it is taken for ten pages at least, and reached through its indexes. The
// live rows are counted from the newest, which retention deletes last, up to the hundred.
const GROWN = `SELECT relname AS name FROM pg_class
WHERE oid = ANY($1::regclass[]) AND pg_relation_size(oid) >= 10 * current_setting('block_size')::int`;
const LIVE = 100;
const holding = (tables: string[]) =>
  tables.map((t) => `SELECT '${t}' AS name FROM (SELECT FROM ${t} ORDER BY ${TABLES[t]} LIMIT ${LIVE}) s HAVING count(*) = ${LIVE}`).join(" UNION ALL ");
/**
 * Tables, with their TOAST tables, holding transaction ids `$1` old, or twice that for the
 * coordinator's tables left alone as small (`$2`): frozen, they too are known to the planner as
 * they are, so not before they must be. Only tables in a schema the role may use, and not another
 * session's temporary ones (VACUUM passes over those): naming a table in a schema the role has no
 * USAGE on fails the whole statement, where a table it may not vacuum only draws a warning.
 */
const AGED = `SELECT c.oid::regclass::text AS name FROM pg_class c LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
WHERE c.relkind IN ('r', 'm') AND NOT pg_is_other_temp_schema(c.relnamespace) AND has_schema_privilege(c.relnamespace, 'USAGE')
  AND greatest(age(c.relfrozenxid), coalesce(age(t.relfrozenxid), 0)) >= $1::bigint * CASE WHEN c.oid = ANY($2::regclass[]) THEN 2 ELSE 1 END`;
const WORK_ORDERS = "SELECT greatest(reltuples, 0)::float8 AS n FROM pg_class WHERE oid = 'work_orders'::regclass";

/**
 * `scale`: the share of the table's rows that must change, past `threshold`, before the next run;
 * `freezeAge`: the age in transactions at which a table is frozen.
 */
export type VacuumOptions = UpkeepOptions & { scale: number; freezeAge: number };

export const DEFAULT_VACUUM: VacuumOptions = { threshold: 10_000, scale: 0.1, minIntervalMs: 10_000, freezeAge: 150_000_000 };

/** Whether the coordinator must vacuum: nothing else will. */
export async function vacuumNeeded(db: Database): Promise<boolean> {
  if (db.kind === "pglite") return true;
  const [row] = await db.query<{ setting: string }>("SELECT current_setting('autovacuum') AS setting");
  return row?.setting === "off";
}

export class Vacuum {
  private readonly upkeep: Upkeep;
  private readonly unsubscribe: (() => void)[];

  constructor(db: Queryable, bus: Bus, onError: (error: unknown) => void, given: Partial<VacuumOptions> = {}) {
    const options = { ...DEFAULT_VACUUM, ...given };
    const names = async (sql: string, params?: unknown[]) => (await db.query<{ name: string }>(sql, params)).map((t) => t.name);
    const vacuum = async (how: string, tables: string[]) => {
      if (tables.length > 0) await db.query(`VACUUM (${how}) ${tables.join(", ")}`);
    };
    const run = async () => {
      const grown = await names(GROWN, [Object.keys(TABLES)]);
      const held = grown.length > 0 ? await names(holding(grown)) : [];
      await vacuum("SKIP_LOCKED", held);
      const small = Object.keys(TABLES).filter((table) => !held.includes(table));
      await vacuum("FREEZE, SKIP_LOCKED", await names(AGED, [options.freezeAge, small]));
      const [table] = await db.query<{ n: number }>(WORK_ORDERS);
      return options.threshold + options.scale * (table?.n ?? 0);
    };
    this.upkeep = new Upkeep(run, onError, options);
    this.unsubscribe = [bus.on("enqueued", (orders) => this.upkeep.add(orders.length)), bus.on("changed", () => this.upkeep.add(1))];
  }

  async stop(): Promise<void> {
    for (const unsubscribe of this.unsubscribe) unsubscribe();
    await this.upkeep.stop();
  }
}
