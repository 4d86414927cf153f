// PGlite runs the coordinator's statements prepared under names: a failed statement must leave the
// session usable, inside a transaction and out, and texts past the cache's size still run. Its
// reading of rows is patched (patches/): every field decodes as it was stored.
import { afterAll, beforeAll, expect, test } from "vitest";
import { type Database, openDatabase } from "../../coordinator/db/database.ts";

let db: Database;

beforeAll(async () => {
  db = await openDatabase({ kind: "pglite", dataDir: ":memory:" });
  await db.query(`CREATE TABLE prepared_probe (id int PRIMARY KEY, tags text[], doc jsonb, note text)`);
});

afterAll(async () => db?.close());

test("parameters of every kind round-trip, and one text runs with new values each time", async () => {
  const insert = `INSERT INTO prepared_probe (id, tags, doc, note) VALUES ($1, $2, $3, $4) RETURNING id, tags, doc, note`;
  expect(await db.query(insert, [1, ["a", "b,c"], JSON.stringify({ k: [1] }), null])).toEqual([
    { id: 1, tags: ["a", "b,c"], doc: { k: [1] }, note: null },
  ]);
  expect(await db.query(insert, [2, [], JSON.stringify("s"), "two"])).toEqual([{ id: 2, tags: [], doc: "s", note: "two" }]);
});

test("every field of every row reads back as stored, however the answer is cut", async () => {
  const notes = ["", "ascii", "héllo wörld", "日本語のテキスト", "🚀 emoji", "x".repeat(70_000)];
  await db.query(`INSERT INTO prepared_probe (id, tags, doc, note) SELECT 1000 + n, $1::text[], $2::jsonb, ($3::text[])[(n % $4) + 1] FROM generate_series(0, 2999) n`, [
    ["ä", ""],
    JSON.stringify({ ünïcode: "✓", nested: [null, ""] }),
    notes,
    notes.length,
  ]);
  const rows = await db.query<{ id: number; tags: string[]; doc: unknown; note: string; none: null; id2: number }>(
    `SELECT id, tags, doc, note, NULL::text AS none, id + 1 AS id2, id + 2 AS id2 FROM prepared_probe WHERE id >= 1000 ORDER BY id`,
  );
  expect(rows).toHaveLength(3000);
  for (const [n, row] of rows.entries()) {
    // Of two columns of one name, the later one's value stands.
    expect(row).toEqual({ id: 1000 + n, tags: ["ä", ""], doc: { ünïcode: "✓", nested: [null, ""] }, note: notes[n % notes.length], none: null, id2: 1002 + n });
  }
});

test("a statement that fails throws Postgres's error and leaves the session usable", async () => {
  const insert = `INSERT INTO prepared_probe (id) VALUES ($1)`;
  await db.query(insert, [10]);
  await expect(db.query(insert, [10])).rejects.toMatchObject({ code: "23505" });
  await expect(db.query(`SELECT 1/$1::int AS x`, [0])).rejects.toMatchObject({ code: "22012" });
  await expect(db.query(`SELECT no_such_column FROM prepared_probe`)).rejects.toMatchObject({ code: "42703" });
  expect(await db.query(`SELECT 1/$1::int AS x`, [1])).toEqual([{ x: 1 }]);
});

test("a failure inside a transaction rolls it back, and the next transaction runs", async () => {
  await expect(
    db.transaction(async (tx) => {
      await tx.query(`INSERT INTO prepared_probe (id) VALUES ($1)`, [20]);
      await tx.query(`INSERT INTO prepared_probe (id) VALUES ($1)`, [20]);
    }),
  ).rejects.toMatchObject({ code: "23505" });
  expect(await db.query(`SELECT count(*)::int AS n FROM prepared_probe WHERE id = $1`, [20])).toEqual([{ n: 0 }]);
  await db.transaction((tx) => tx.query(`INSERT INTO prepared_probe (id) VALUES ($1)`, [20]));
  expect(await db.query(`SELECT count(*)::int AS n FROM prepared_probe WHERE id = $1`, [20])).toEqual([{ n: 1 }]);
});

test("more distinct texts than the cache keeps all run, and the first ones again after they were closed", async () => {
  const texts = Array.from({ length: 250 }, (_, i) => `SELECT $1::int + ${i} AS n`);
  for (const [i, text] of texts.entries()) expect(await db.query(text, [1])).toEqual([{ n: i + 1 }]);
  for (const [i, text] of texts.slice(0, 5).entries()) expect(await db.query(text, [2])).toEqual([{ n: i + 2 }]);
  // Closed, not left behind in the session.
  const [{ n }] = (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_prepared_statements`)) as [{ n: number }];
  expect(n).toBeLessThanOrEqual(200);
});
