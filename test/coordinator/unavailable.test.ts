// Which errors mean the database is out of reach, and which of those leave a statement that was sent
// with no telling whether it committed.
import postgres from "postgres";
import { expect, test } from "vitest";
import { isUnavailable, mayHaveCommitted } from "../../coordinator/db/unavailable.ts";
import { createPostgresDatabase, describePostgres, dropPostgresDatabase, TEST_DATABASE_URL } from "../support/databases.ts";

const withCode = (code: string) => Object.assign(new Error(code), { code });

test.each(["ECONNREFUSED", "CONNECTION_CLOSED", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "57P01", "57P03", "08006", "53300"])("%s means the database is unavailable", (code) => {
  expect(isUnavailable(withCode(code))).toBe(true);
});

test("an unavailable cause inside a wrapper (as drizzle wraps driver errors) counts", () => {
  expect(isUnavailable(new Error("Failed query", { cause: withCode("ECONNREFUSED") }))).toBe(true);
});

test.each(["23505", "42P01", "22P02", undefined])("%s is a bug, not an outage", (code) => {
  expect(isUnavailable(code ? withCode(code) : new Error("plain"))).toBe(false);
  expect(isUnavailable(undefined)).toBe(false);
});

test.each([
  ["CONNECTION_CLOSED", true],
  ["ECONNRESET", true],
  ["57P01", true],
  ["08006", true],
  ["EHOSTUNREACH", true],
  ["ECONNREFUSED", false],
  ["EAI_AGAIN", false],
  ["CONNECT_TIMEOUT", false],
  ["53300", false],
  ["57P03", false],
  ["40P01", false],
])("a statement that failed with %s may have committed: %s", (code, may) => {
  expect(mayHaveCommitted(new Error("Failed query", { cause: withCode(code) }))).toBe(may);
});

test("55000 is an outage only when fatal (a connection refused), not as a statement's error", () => {
  expect(isUnavailable(Object.assign(withCode("55000"), { severity: "ERROR" }))).toBe(false);
  expect(isUnavailable(Object.assign(withCode("55000"), { severity: "FATAL" }))).toBe(true);
});

describePostgres("a database that does not take connections", () => {
  test("(ALLOW_CONNECTIONS false) is unavailable, and nothing sent to it can have committed", async () => {
    const url = await createPostgresDatabase();
    const admin = postgres(TEST_DATABASE_URL!, { max: 1, onnotice: () => {} });
    const name = url.pathname.slice(1);
    try {
      await admin.unsafe(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS false`);
      const client = postgres(url.toString(), { max: 1, onnotice: () => {} });
      const error = await client`SELECT 1`.catch((e: unknown) => e);
      await client.end();
      expect(error).toMatchObject({ code: "55000" });
      expect(isUnavailable(error)).toBe(true);
      expect(mayHaveCommitted(error)).toBe(false);
    } finally {
      await admin.unsafe(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`);
      await admin.end();
      await dropPostgresDatabase(url);
    }
  });
});
