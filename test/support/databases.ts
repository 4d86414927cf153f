// Every store-level suite runs on both databases: PGlite in memory, and a fresh database on the
// Postgres server named by TEST_DATABASE_URL (created per suite, dropped after).
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { describe } from "vitest";
import { type Database, type DatabaseConfig, openDatabase } from "../../coordinator/db/database.ts";

export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL;

/** Why the Postgres half of the suites is skipped, when it is. */
export const POSTGRES_SKIP_REASON = "TEST_DATABASE_URL is not set (.ci/run sets it to the local server)";

export type Kind = DatabaseConfig["kind"];

/** A fresh, migrated, empty database of the given kind; `close` drops it. */
export async function freshDatabase(kind: Kind, poolSize?: number): Promise<Database> {
  if (kind === "pglite") return openDatabase({ kind, dataDir: ":memory:" });
  const url = await createPostgresDatabase();
  const db = await openDatabase({ kind, url: url.toString(), poolSize });
  return { ...db, orm: db.orm, close: async () => (await db.close(), await dropPostgresDatabase(url)) } as Database;
}

/** Creates an empty database on the test server; returns its URL. */
export async function createPostgresDatabase(): Promise<URL> {
  if (!TEST_DATABASE_URL) throw new Error(POSTGRES_SKIP_REASON);
  const name = `jobfleet_test_${randomBytes(6).toString("hex")}`;
  const admin = postgres(TEST_DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(TEST_DATABASE_URL);
  url.pathname = `/${name}`;
  return url;
}

export async function dropPostgresDatabase(url: URL): Promise<void> {
  const admin = postgres(TEST_DATABASE_URL!, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${url.pathname.slice(1)} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

/** Declares `suite` once per database kind; the Postgres one is skipped, with its reason, without a URL. */
export function forEachDatabase(title: string, suite: (kind: Kind) => void): void {
  describe(`${title} [pglite]`, () => suite("pglite"));
  describePostgres(`${title} [postgres]`, () => suite("postgres"));
}

/** A suite that needs a Postgres server; without one it is skipped, and its title says why. */
export function describePostgres(title: string, suite: () => void): void {
  describe.skipIf(!TEST_DATABASE_URL)(`${title}${TEST_DATABASE_URL ? "" : ` (skipped: ${POSTGRES_SKIP_REASON})`}`, suite);
}
