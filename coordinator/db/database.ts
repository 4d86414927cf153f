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
