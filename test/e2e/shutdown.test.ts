// A coordinator that stops answers every request it has taken on (an enqueue whose insert committed
// is answered, so a client never retries into a duplicate) and ends its log followers' streams, so
// they follow on from another coordinator.
import postgres from "postgres";
import { pino } from "pino";
import { expect, it } from "vitest";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { startCoordinator } from "../../coordinator/coordinator.ts";
import { createPostgresDatabase, describePostgres, dropPostgresDatabase } from "../support/databases.ts";

describePostgres("a coordinator stopping", () => {
  it("answers every enqueue it committed, and ends its followers' streams", { timeout: 60_000 }, async () => {
    const url = await createPostgresDatabase();
    try {
      const coordinator = await startCoordinator({ database: { kind: "postgres", url: url.toString() }, port: 0, logger: pino({ level: "silent" }) });
      const { token } = await tokenCreate(coordinator.db, "ci", "ci");
      const post = () =>
        fetch(`${coordinator.url}/v1/work-orders`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify({ spec: { command: ["true"] }, selector: "pool=nobody" }),
        });
      const { id } = (await (await post()).json()) as { id: string };
      const follow = await fetch(`${coordinator.url}/v1/work-orders/${id}/log?follow=true`, { headers: { authorization: `Bearer ${token}` } });
      const followed = follow.text();

      const posts = Array.from({ length: 200 }, () => post().then((r) => r.status, () => "cut" as const));
      await Promise.race(posts);
      await coordinator.stop();
      const statuses = await Promise.all(posts);
      expect(await followed).toBe("");

      const sql = postgres(url.toString(), { max: 1, onnotice: () => {} });
      const [row] = await sql<{ count: number }[]>`SELECT count(*)::int AS count FROM work_orders`;
      await sql.end();
      const count = row!.count;
      expect(statuses.filter((s) => s !== 201 && s !== "cut")).toEqual([]);
      expect(count - 1).toBe(statuses.filter((s) => s === 201).length);
    } finally {
      await dropPostgresDatabase(url);
    }
  });
});
