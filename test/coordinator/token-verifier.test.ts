// The verifier counts failed authentications per client address. Guesses sent at once are charged
// as their reads start, so they cannot outrun the limit; requests that present one token at once
// share its read, and a good token costs its address nothing. A cached token past half its age is
// read again while its requests go on.
import { afterAll, beforeAll, expect, test, vi } from "vitest";
import { Throttled, tokenCreate, tokenRevoke, TokenVerifier } from "../../coordinator/auth/tokens.ts";
import { type Database, openDatabase } from "../../coordinator/db/database.ts";
import { RateLimits } from "../../coordinator/rate/rate-limits.ts";

let db: Database;
let reads = 0;
/** The database with each read of the tokens table counted and slowed, so that requests overlap. */
let counting: Database;

beforeAll(async () => {
  db = await openDatabase({ kind: "pglite", dataDir: ":memory:" });
  const select = db.orm.select.bind(db.orm);
  const orm = new Proxy(db.orm, {
    get: (target, key, receiver) =>
      key !== "select"
        ? Reflect.get(target, key, receiver)
        : (...args: Parameters<typeof select>) => {
            reads++;
            const query = select(...args);
            return { from: (table: never) => ({ where: async (where: never) => (await new Promise((r) => setTimeout(r, 20)), query.from(table).where(where)) }) };
          },
  });
  counting = { ...db, orm } as Database;
});
afterAll(async () => db?.close());

const guess = (i: number) => `jft_${900 + i}_${"x".repeat(43)}`;

test("guesses sent at once from one address cost at most its burst of reads; the rest are throttled", async () => {
  reads = 0;
  const verifier = new TokenVerifier(counting, { failures: new RateLimits({ perSecond: 0.5, burst: 3 }) });
  const results = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => verifier.verify(guess(i), "10.0.0.1")));
  expect(reads).toBe(3);
  expect(results.filter((r) => r.status === "fulfilled" && r.value === undefined)).toHaveLength(3);
  expect(results.filter((r) => r.status === "rejected" && r.reason instanceof Throttled)).toHaveLength(197);
  // Another address is its own.
  expect(await verifier.verify(guess(0), "10.0.0.2")).toBeUndefined();
});

test("requests presenting one good token at once share a read and cost their address nothing", async () => {
  const { token } = await tokenCreate(db, "shared", "ci");
  reads = 0;
  const verifier = new TokenVerifier(counting, { ttlMs: 0, failures: new RateLimits({ perSecond: 0.5, burst: 3 }) });
  for (let round = 0; round < 3; round++) {
    const principals = await Promise.all(Array.from({ length: 50 }, () => verifier.verify(token, "10.0.0.3")));
    expect(principals.every((p) => p?.name === "shared")).toBe(true);
  }
  expect(reads).toBe(3);
  // Its allowance is whole: three failures pass before the fourth attempt is refused.
  const wrong = `${token.slice(0, -1)}${token.endsWith("A") ? "B" : "A"}`;
  for (let i = 0; i < 3; i++) expect(await verifier.verify(wrong, "10.0.0.3")).toBeUndefined();
  await expect(verifier.verify(token, "10.0.0.3")).rejects.toBeInstanceOf(Throttled);
});

test("a token cached past half its age is read again in the background: its request does not wait, and a revocation is seen sooner", async () => {
  const { token, view } = await tokenCreate(db, "busy", "ci");
  const verifier = new TokenVerifier(counting, { ttlMs: 1000 });
  vi.useFakeTimers({ toFake: ["Date"] });
  try {
    expect(await verifier.verify(token)).toMatchObject({ name: "busy" });
    reads = 0;
    await tokenRevoke(db, view.id);
    vi.setSystemTime(Date.now() + 400);
    expect(await verifier.verify(token)).toMatchObject({ name: "busy" });
    expect(reads).toBe(0);
    vi.setSystemTime(Date.now() + 200);
    // Answered from the cache while the read (slowed to 20 ms) goes on.
    expect(await verifier.verify(token)).toMatchObject({ name: "busy" });
    expect(reads).toBe(1);
    await vi.waitFor(async () => expect(await verifier.verify(token)).toBeUndefined());
    expect(reads).toBe(1);
  } finally {
    vi.useRealTimers();
  }
});
