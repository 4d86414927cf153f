import { expect, test } from "vitest";
import { isUnavailable } from "../../coordinator/db/unavailable.ts";

const withCode = (code: string) => Object.assign(new Error(code), { code });

test.each(["ECONNREFUSED", "CONNECTION_CLOSED", "57P01", "57P03", "08006", "53300"])("%s means the database is unavailable", (code) => {
  expect(isUnavailable(withCode(code))).toBe(true);
});

test("an unavailable cause inside a wrapper (as drizzle wraps driver errors) counts", () => {
  expect(isUnavailable(new Error("Failed query", { cause: withCode("ECONNREFUSED") }))).toBe(true);
});

test.each(["23505", "42P01", "22P02", undefined])("%s is a bug, not an outage", (code) => {
  expect(isUnavailable(code ? withCode(code) : new Error("plain"))).toBe(false);
  expect(isUnavailable(undefined)).toBe(false);
});
