// A database error is logged without the input it quotes, which may be a secret.
import { Writable } from "node:stream";
import { pino } from "pino";
import postgres from "postgres";
import { afterAll, expect, it } from "vitest";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, startCoordinator } from "../../coordinator/coordinator.ts";
import { errorLogger, withoutData } from "../../coordinator/loggable.ts";
import { forEachDatabase, freshDatabase } from "../support/databases.ts";
import { freePort } from "../support/ports.ts";

forEachDatabase("errors as logged", (kind) => {
  it("keep the database's message and code, and drop what quotes the input", async () => {
    const db = await freshDatabase(kind);
    try {
      const error = await db.query("SELECT $1::jsonb", ['{"AWS_SECRET_ACCESS_KEY":"wJalrXUtnFEMI","x":"\\ud800"}']).catch((e: unknown) => e);
      expect(JSON.stringify(error)).toContain("wJalrXUtnFEMI");
      const logged = JSON.stringify(withoutData(error));
      expect(logged).not.toContain("wJalrXUtnFEMI");
      expect(logged).toContain((error as Error).message);
      expect(JSON.parse(logged)).toMatchObject({ code: "22P02" });
    } finally {
      await db.close();
    }
  });
});

// A claim round, the relay or the reaper failing while Postgres restarts is tried again; logged as an
// internal error, it read as a bug in every outage.
it("the database away is logged as a warning, anything else as an internal error", async () => {
  const lines: string[] = [];
  const log = errorLogger(pino({ level: "info" }, sink(lines)));
  const sql = postgres({ host: "127.0.0.1", port: await freePort(), max: 1, connect_timeout: 5 });
  const refused = await sql`SELECT 1`.catch((error: unknown) => error);
  await sql.end();
  log(refused);
  log(new TypeError("x is undefined"));
  const [away, bug] = lines.map((line) => JSON.parse(line));
  expect(away).toMatchObject({ level: 40, msg: "database unavailable", error: { code: "ECONNREFUSED" } });
  expect(bug).toMatchObject({ level: 50, msg: "internal error", error: { type: "TypeError", message: "x is undefined" } });
});

function sink(lines: string[]): Writable {
  return new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
}

let coordinator: Coordinator | undefined;
afterAll(async () => coordinator?.stop());

// A POST /v1/tokens whose insert the database refuses for a reason other than being unreachable (a
// read-only database, as after a failover to a standby; a full disk) is an internal error. Drizzle's
// wrapper quotes the parameters, the hash among them, in its message, stack and `params`; PGlite's
// error in its `params`. Found by a review.
it("a token whose insert fails is logged without its hash", async () => {
  const lines: string[] = [];
  coordinator = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, logger: pino({ level: "info" }, sink(lines)), retainDays: 0 });
  const admin = (await tokenCreate(coordinator.db, "admin", "admin")).token;
  // The database now refuses writes (read-only), as a standby does.
  await coordinator.db.query(`SET default_transaction_read_only = on`);
  const response = await fetch(`${coordinator.url}/v1/tokens`, {
    method: "POST",
    headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "deploy", role: "admin" }),
  });
  expect(response.status).toBe(500);
  await new Promise((r) => setTimeout(r, 100));
  const logged = lines.join("");
  expect(logged).toContain("internal error");
  // The hash is 64 hex digits (SHA-256 of the secret).
  expect(logged).not.toMatch(/[0-9a-f]{64}/);
});
