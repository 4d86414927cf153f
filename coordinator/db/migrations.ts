import { fileURLToPath } from "node:url";

export const migrationsFolder = fileURLToPath(new URL("./migrations", import.meta.url));

/** Any fixed number: every coordinator takes the same advisory lock to migrate one at a time. */
export const MIGRATION_LOCK = 4_243_001;
