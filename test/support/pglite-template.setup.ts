// Before each test file: its in-memory databases start from the run's migrated template.
import { readFileSync } from "node:fs";
import { startMemoryDatabasesFrom } from "../../coordinator/db/pglite.ts";
import { TEMPLATE_VARIABLE } from "./pglite-template.global.ts";

const file = process.env[TEMPLATE_VARIABLE];
if (file) startMemoryDatabasesFrom(new Blob([readFileSync(file)]));
