import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const migrationsFolder = fileURLToPath(new URL("./migrations", import.meta.url));

/** Any fixed number: every coordinator takes the same advisory lock to migrate one at a time. */
export const MIGRATION_LOCK = 4_243_001;

const NEWEST_APPLIED = `SELECT max(created_at)::text AS newest FROM drizzle.__drizzle_migrations`;

/**
 * Refuses a database that a newer version migrated (an upgrade rolled back, a backup restored under
 * an older one): drizzle applies what is newer than the last migration recorded and passes over
 * what it does not know, and this version would serve on a schema it cannot use.
 */
export async function refuseNewer(query: (text: string) => Promise<{ newest: string | null }[]>): Promise<void> {
  let rows: { newest: string | null }[];
  try {
    rows = await query(NEWEST_APPLIED);
  } catch (error) {
    if ((error as { code?: string }).code === "42P01") return; // never migrated
    throw error;
  }
  const newest = rows[0]?.newest ?? null;
  const { entries } = JSON.parse(readFileSync(join(migrationsFolder, "meta", "_journal.json"), "utf8")) as { entries: { when: number }[] };
  const known = entries.at(-1)!.when;
  if (newest === null || Number(newest) <= known) return;
  const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);
  const message = `a newer jobfleet migrated it (its newest migration is of ${day(Number(newest))}, this version's of ${day(known)}): run that version or a later one`;
  throw Object.assign(new Error(message), { code: "JOBFLEET_DATABASE_NEWER" });
}
