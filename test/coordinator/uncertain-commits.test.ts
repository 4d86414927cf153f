// A write whose connection was lost once it was sent may have committed unanswered; the first
// success after it tells whoever waits for announcements to look again, once. A write that was
// never sent, or that the database refused, committed nothing and tells no one.
import { afterAll, beforeAll, expect, test } from "vitest";
import type { Database } from "../../coordinator/db/database.ts";
import { openDatabase } from "../../coordinator/db/database.ts";
import { afterUncertainCommits } from "../../coordinator/db/uncertain-commits.ts";

let raw: Database;
beforeAll(async () => {
  raw = await openDatabase({ kind: "pglite", dataDir: ":memory:" });
});
afterAll(() => raw.close());

const failure = (code: string) => Object.assign(new Error(code), { code });

test("the first success after a write that may have committed unanswered looks again, once; other failures do not", async () => {
  let recovered = 0;
  const db = afterUncertainCommits(raw, () => recovered++);
  const failing = (code: string) =>
    db.transaction(async (tx) => {
      await tx.query("SELECT 1");
      throw failure(code);
    });
  await expect(failing("ECONNREFUSED")).rejects.toThrow("ECONNREFUSED");
  await expect(db.query("SELECT nonsense")).rejects.toThrow();
  await db.query("SELECT 1");
  expect(recovered).toBe(0);

  await expect(failing("CONNECTION_CLOSED")).rejects.toThrow("CONNECTION_CLOSED");
  await expect(failing("57P01")).rejects.toThrow("57P01");
  expect(recovered).toBe(0);
  expect(await db.query<{ n: number }>("SELECT 2 AS n")).toEqual([{ n: 2 }]);
  expect(recovered).toBe(1);
  await db.transaction((tx) => tx.query("SELECT 3"));
  expect(recovered).toBe(1);

  await expect(failing("ECONNRESET")).rejects.toThrow();
  await db.transaction((tx) => tx.query("SELECT 4"));
  expect(recovered).toBe(2);
});

test("so do a claim and a batch of job messages, which run under a generic plan", async () => {
  let recovered = 0;
  let lost = true;
  const ended = () => Promise.reject(failure("CONNECTION_ENDED"));
  const generic: Database["generic"] = {
    query: <Row>(text: string) => (lost ? ended() : raw.generic.query<Row>(text)),
    transaction: (fn) => (lost ? ended() : raw.generic.transaction(fn)),
  };
  const db = afterUncertainCommits({ ...raw, generic }, () => recovered++);
  await expect(db.generic.query("SELECT 1")).rejects.toThrow("CONNECTION_ENDED");
  lost = false;
  expect(await db.generic.query<{ n: number }>("SELECT 5 AS n")).toEqual([{ n: 5 }]);
  expect(recovered).toBe(1);
  lost = true;
  await expect(db.generic.transaction((tx) => tx.query("SELECT 6"))).rejects.toThrow("CONNECTION_ENDED");
  lost = false;
  expect(await db.generic.transaction((tx) => tx.query<{ n: number }>("SELECT 7 AS n"))).toEqual([{ n: 7 }]);
  expect(recovered).toBe(2);
});

