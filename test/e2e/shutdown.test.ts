// A coordinator that cannot start leaves nothing running. One that stops answers every request it has taken on (an enqueue whose insert committed
// is answered, so a client never retries into a duplicate) and ends its log followers' streams, so
// they follow on from another coordinator.
import { once } from "node:events";
import { type AddressInfo, createServer } from "node:net";
import postgres from "postgres";
import { pino } from "pino";
import { expect, it } from "vitest";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { startCoordinator } from "../../coordinator/coordinator.ts";
import { createPostgresDatabase, describePostgres, dropPostgresDatabase, TEST_DATABASE_URL } from "../support/databases.ts";

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

describePostgres("a coordinator that cannot start", () => {
  it("leaves nothing running: no timers, no database connections", { timeout: 60_000 }, async () => {
    const url = await createPostgresDatabase();
    const taken = createServer().listen(0, "127.0.0.1");
    await once(taken, "listening");
    try {
      const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
      const before = timers();
      const start = startCoordinator({ database: { kind: "postgres", url: url.toString() }, port: (taken.address() as AddressInfo).port, logger: pino({ level: "silent" }) });
      await expect(start).rejects.toMatchObject({ code: "EADDRINUSE" });
      expect(timers()).toBeLessThanOrEqual(before);
      const sql = postgres(TEST_DATABASE_URL!, { max: 1, onnotice: () => {} });
      const [row] = await sql<{ count: number }[]>`SELECT count(*)::int AS count FROM pg_stat_activity WHERE datname = ${url.pathname.slice(1)}`;
      await sql.end();
      expect(row!.count).toBe(0);
    } finally {
      taken.close();
      await dropPostgresDatabase(url);
    }
  });
});
