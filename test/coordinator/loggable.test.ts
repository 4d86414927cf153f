// A database error is logged without the input it quotes, which may be a secret.
import { expect, it } from "vitest";
import { withoutData } from "../../coordinator/loggable.ts";
import { forEachDatabase, freshDatabase } from "../support/databases.ts";

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
