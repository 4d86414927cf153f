import { realpathSync } from "node:fs";
import { PGlite, types } from "@electric-sql/pglite";
import { drizzle } from "drizzle-orm/pglite";
import { migrate } from "drizzle-orm/pglite/migrator";
import type { Database, Orm } from "./database.ts";
import { migrationsFolder, refuseNewer } from "./migrations.ts";
import { claimDataDir, initialiseDataDir } from "./pglite-data-dir.ts";
import { PreparedStatements } from "./pglite-prepared.ts";
import * as schema from "./schema.ts";

/** A dump of a migrated database that in-memory ones start from, if given: a new cluster takes 2-3 s. */
let memoryTemplate: Blob | undefined;

/** In-memory databases opened from now on in this process start from `dump` (the test suite's, made once a run). */
export function startMemoryDatabasesFrom(dump: Blob): void {
  memoryTemplate = dump;
}

export async function openPglite(given: string): Promise<Database> {
  if (given === ":memory:") return opened(new PGlite(memoryTemplate && { loadDataDir: memoryTemplate }), () => {});
  const release = claimDataDir(given);
  try {
    // PGlite's file system does not follow a symlinked directory (a volume linked in): the real one.
    const dataDir = realpathSync(given);
    await initialiseDataDir(dataDir, async (dir) => (await PGlite.create(dir)).close());
    return await opened(new PGlite(dataDir), release);
  } catch (error) {
    release();
    throw withCode(error);
  }
}

/**
 * PGlite's own failures carry no code (a bare Error, or its file system's ErrnoError with only an
 * errno, as on a full disk): given one, they are told as the data directory's, in a line.
 */
function withCode(error: unknown): unknown {
  if ((error as NodeJS.ErrnoException).code !== undefined) return error;
  const { message, errno } = error as { message?: string; errno?: number };
  const said = message || (errno === undefined ? String(error) : `its file system failed (errno ${errno})`);
  return Object.assign(new Error(said, { cause: error }), { code: "JOBFLEET_DATA_DIR_UNUSABLE" });
}

async function opened(client: PGlite, release: () => void): Promise<Database> {
  try {
    return await ready(client, release);
  } catch (error) {
    // Closed before the caller releases the claim: no second coordinator opens the directory under it.
    await client.close().catch(() => {});
    throw error;
  }
}

async function ready(client: PGlite, release: () => void): Promise<Database> {
  await client.waitReady;
  // Its one session, whatever the database's default: array parameters write a missing value as NULL.
  await client.exec("SET array_nulls = on");
  // int8 stays a decimal string, as postgres-js gives it. Set on the instance, not per query:
  // parsers given with a query are merged into a copy of the whole map, 0.1 ms a query.
  client.parsers[types.INT8] = (value: string) => value;
  const orm = drizzle({ client, schema }) as unknown as Orm;
  await refuseNewer(async (text) => (await client.query<{ newest: string | null }>(text)).rows);
  await migrate(drizzle({ client }), { migrationsFolder });
  const prepared = new PreparedStatements(client);
  return {
    kind: "pglite",
    orm,
    ...prepared.queryable,
    generic: prepared.generic,
    close: async () => {
      await client.close();
      release();
    },
  };
}
