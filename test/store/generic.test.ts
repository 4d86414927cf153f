// `Database.generic` runs a statement, or a transaction's, under a generic plan, and leaves every other statement to
// Postgres' own choice, also after a statement that failed (PGlite has one connection for both).
import { expect, it } from "vitest";
import { forEachDatabase } from "../support/databases.ts";
import { useDatabase } from "./fixtures.ts";

const MODE = "SELECT current_setting('plan_cache_mode') AS mode, $1::int AS n";

forEachDatabase("generic plans", (kind) => {
  const db = useDatabase(kind);

  it("are what generic statements run under, and only they", async () => {
    expect(await db().generic.query(MODE, [1])).toEqual([{ mode: "force_generic_plan", n: 1 }]);
    expect(await db().query(MODE, [2])).toEqual([{ mode: "auto", n: 2 }]);
    await expect(db().generic.query("SELECT 1 / $1::int AS n", [0])).rejects.toThrow(/division by zero/);
    expect(await db().query(MODE, [3])).toEqual([{ mode: "auto", n: 3 }]);
    expect(await db().generic.query(MODE, [4])).toEqual([{ mode: "force_generic_plan", n: 4 }]);
  });

  it("are made with no sequential scan, and only they", async () => {
    const SCANS = "SELECT current_setting('enable_seqscan') AS scans";
    expect(await db().generic.query(SCANS)).toEqual([{ scans: "off" }]);
    expect(await db().generic.transaction((tx) => tx.query(SCANS))).toEqual([{ scans: "off" }]);
    expect(await db().query(SCANS)).toEqual([{ scans: "on" }]);
    expect(await db().transaction((tx) => tx.query(SCANS))).toEqual([{ scans: "on" }]);
  });

  it("are what a generic transaction's statements run under, and the setting ends with it", async () => {
    const inside = await db().generic.transaction(async (tx) => [await tx.query(MODE, [1]), await tx.query(MODE, [2])]);
    expect(inside).toEqual([[{ mode: "force_generic_plan", n: 1 }], [{ mode: "force_generic_plan", n: 2 }]]);
    expect(await db().query(MODE, [3])).toEqual([{ mode: "auto", n: 3 }]);
    await expect(db().generic.transaction((tx) => tx.query("SELECT 1 / $1::int AS n", [0]))).rejects.toThrow(/division by zero/);
    expect(await db().query(MODE, [4])).toEqual([{ mode: "auto", n: 4 }]);
    expect(await db().transaction((tx) => tx.query(MODE, [5]))).toEqual([{ mode: "auto", n: 5 }]);
  });
});
