// The coordinator's one door to Postgres: a raw query function for the hot-path SQL modules,
// transactions, and a drizzle instance for the composable list queries. Two drivers sit behind
// it: PGlite (embedded, the default) and postgres-js (a real server, when a URL is given).
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import type { Listener } from "../relay/relay.ts";
import type * as schema from "./schema.ts";

export type Queryable = {
  query<Row = Record<string, unknown>>(text: string, params?: unknown[]): Promise<Row[]>;
};

export type Transactional = Queryable & {
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
};

/**
 * What `Database.generic` runs under: a plan made once per connection and statement, and kept
 * until a table it reads is analyzed again. No sequential scan: made while a table was small (a
 * fresh database, its first claims), the plan would scan it whole, and go on doing so however large
 * it grew; every generic statement finds its rows through an index. (A batch's lock of 100 jobs
 * under a plan made on a table of 100 took 1.8 s once the table held 50,000, and 0.7 ms without.)
 */
export const GENERIC_SETTINGS = { plan_cache_mode: "force_generic_plan", enable_seqscan: "off" } as const;

export type Orm = PgDatabase<PgQueryResultHKT, typeof schema>;

export interface Database extends Transactional {
  readonly kind: "pglite" | "postgres";
  /**
   * Runs statements, alone or in a transaction, under a generic plan, made once per connection:
   * for a statement that costs more to plan afresh each time, as Postgres otherwise does when it
   * expects a custom plan to pay.
   */
  readonly generic: Transactional;
  readonly orm: Orm;
  /** LISTEN/NOTIFY, where other coordinators may share the database (a real server). */
  readonly listener?: Listener;
  close(): Promise<void>;
}

export type DatabaseConfig =
  | { kind: "postgres"; url: string; poolSize?: number }
  /** `dataDir` is a directory, or `:memory:` for a database that lives as long as the process. */
  | { kind: "pglite"; dataDir: string };

export async function openDatabase(config: DatabaseConfig): Promise<Database> {
  const db =
    config.kind === "postgres"
      ? await (await import("./postgres.ts")).openPostgres(config.url, config.poolSize)
      : await (await import("./pglite.ts")).openPglite(config.dataDir);
  return db;
}
