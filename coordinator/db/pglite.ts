import { PGlite, types } from "@electric-sql/pglite";
import { drizzle } from "drizzle-orm/pglite";
import { migrate } from "drizzle-orm/pglite/migrator";
import type { Database, Orm, Queryable } from "./database.ts";
import { migrationsFolder } from "./migrations.ts";
import * as schema from "./schema.ts";

// PGlite parses int8 as a JS number; ids stay decimal strings, as postgres-js gives them.
const parsers = { [types.INT8]: (value: string) => value };

function queryable(client: Pick<PGlite, "query">): Queryable {
  return {
    async query<Row>(text: string, params?: unknown[]) {
      return (await client.query<Row>(text, params, { parsers })).rows;
    },
  };
}

export async function openPglite(dataDir: string): Promise<Database> {
  const client = new PGlite(dataDir === ":memory:" ? undefined : dataDir, { parsers });
  await client.waitReady;
  const orm = drizzle({ client, schema }) as unknown as Orm;
  await migrate(drizzle({ client }), { migrationsFolder });
  return {
    kind: "pglite",
    orm,
    ...queryable(client),
    transaction: (fn) => client.transaction((tx) => fn(queryable(tx))),
    close: () => client.close(),
  };
}
