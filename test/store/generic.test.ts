// `Database.generic` runs a statement under a generic plan, and leaves every other statement to
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
});
