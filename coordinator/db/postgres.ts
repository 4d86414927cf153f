import { randomUUID } from "node:crypto";
import { drizzle } from "drizzle-orm/postgres-js";
import { migrate } from "drizzle-orm/postgres-js/migrator";
import postgres from "postgres";
import { type Database, GENERIC_SETTINGS, type Orm, type Queryable, type Transactional } from "./database.ts";
import { MIGRATION_LOCK, migrationsFolder, refuseNewer } from "./migrations.ts";
import * as schema from "./schema.ts";

type Client = postgres.Sql | postgres.TransactionSql;

function queryable(client: Client): Queryable {
  return {
    async query<Row>(text: string, params: unknown[] = []) {
      return (await client.unsafe(text, params as postgres.ParameterOrJSON<never>[], { prepare: true })) as Row[];
    },
  };
}

function transactional(client: postgres.Sql): Transactional {
  return { ...queryable(client), transaction: (fn) => client.begin((tx) => fn(queryable(tx))) as never };
}

async function migrateLocked(url: string): Promise<void> {
  const client = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await client`select pg_advisory_lock(${MIGRATION_LOCK})`;
    await refuseNewer((text) => client.unsafe(text));
    await migrate(drizzle({ client }), { migrationsFolder });
  } finally {
    await client.end();
  }
}

/**
 * A pool configured as drizzle configures the orm's (json parameters sent as given, timestamps as
 * text), so that every pool reads and writes alike. No JIT: these statements each serve a few
 * hundred rows at most, where compiling costs tens of milliseconds (a claim for 600 slots took
 * 185 ms with it, 28 without) and never pays off. `array_nulls` on, whatever the database's
 * default: the array parameters (sql/array-literal.ts) write a missing value as NULL.
 */
function pool(url: string, max: number, settings: Record<string, string> = {}) {
  const client = postgres(url, { max, onnotice: () => {}, connection: { jit: "off", array_nulls: "on", ...settings } });
  return { client, orm: drizzle({ client, schema }) as unknown as Orm };
}

/**
 * Who listens on the channel. `others`: the application names of the sessions but this database's
 * own whose last statement was the LISTEN (as postgres-js words it, in any version), and, unnamed,
 * those of another role, which cannot be read; unnamed too when the server does not track
 * statements. `self`: whether one of its own sessions is among them (its sessions all carry its
 * application name); taken as so when that cannot be told (statements untracked, or the URL's
 * `application_name` in place of its own).
 */
const LISTENING = `SELECT CASE WHEN current_setting('track_activities')::bool
    THEN coalesce(json_agg(CASE WHEN query = $2 THEN application_name ELSE '' END) FILTER (WHERE application_name <> $1), '[]')
    ELSE '[""]' END AS others,
  NOT current_setting('track_activities')::bool OR current_setting('application_name') <> $1
    OR coalesce(bool_or(application_name = $1 AND query = $2), false) AS self
FROM pg_stat_activity
WHERE datname = current_database() AND query IN ($2, '<insufficient privilege>')`;

export async function openPostgres(url: string, poolSize = 10): Promise<Database> {
  await migrateLocked(url);
  const name = `jobfleet-coordinator/${randomUUID()}`;
  const { client, orm } = pool(url, poolSize, { application_name: name });
  // Connections of their own, since the settings are a connection's; as many as the claims shared before.
  const generic = pool(url, poolSize, { application_name: name, ...GENERIC_SETTINGS }).client;
  return {
    kind: "postgres",
    orm,
    ...transactional(client),
    generic: transactional(generic),
    listener: {
      name,
      async listen(channel, onPayload, onListen) {
        const { unlisten } = await client.listen(channel, onPayload, onListen);
        return unlisten;
      },
      async notify(channel, payloads) {
        // A json array, not text[]: JSON.stringify is native, where postgres-js escapes array items in JS.
        await client.unsafe(`SELECT pg_notify($1, payload) FROM json_array_elements_text($2::json) WITH ORDINALITY AS p(payload, n) ORDER BY n`, [
          channel,
          JSON.stringify(payloads),
        ]);
      },
      async listening(channel) {
        const [row] = await client.unsafe<{ others: string[]; self: boolean }[]>(LISTENING, [name, `listen "${channel.replace(/"/g, '""')}"`]);
        return row!;
      },
    },
    close: async () => void (await Promise.all([client.end({ timeout: 5 }), generic.end({ timeout: 5 })])),
  };
}
