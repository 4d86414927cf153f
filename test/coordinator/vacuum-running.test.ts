// The coordinator's own vacuum runs while agents claim and end jobs, on PGlite (whose one
// connection it holds while it runs): every work order still ends once, with one job.
import { expect, test, vi } from "vitest";
import { z } from "zod";
import type { Adapter } from "../../adapters/adapter.ts";
import { useInProcessCoordinator } from "../support/in-process.ts";

const noop: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async () => ({ result: Promise.resolve({ outcome: "succeeded" as const, exitCode: 0 }), cancel: async () => {} }),
};

const fleet = useInProcessCoordinator({ vacuum: { threshold: 50, scale: 0, minIntervalMs: 0 } });

test("vacuums as the work orders change, and loses or repeats none of them", async () => {
  const { coordinator, api, agent } = fleet();
  for (const name of ["v1", "v2", "v3"]) agent({ name, labels: { pool: "vacuum" }, adapter: noop, prefetch: 2 });
  const orders = Array.from({ length: 400 }, () => ({ spec: { command: ["true"] }, selector: "pool=vacuum" }));
  const { ids } = await api<{ ids: string[] }>("POST", "/v1/work-orders/bulk", { workOrders: orders });
  expect(ids).toHaveLength(400);

  const ended = async () =>
    (await coordinator.db.query<{ n: number }>("SELECT count(*)::int AS n FROM work_orders WHERE state = 'succeeded'"))[0]!.n;
  await vi.waitFor(async () => expect(await ended()).toBe(400), { timeout: 60_000, interval: 100 });
  const [jobs] = await coordinator.db.query<{ jobs: number; orders: number }>(
    "SELECT count(*)::int AS jobs, count(DISTINCT work_order_id)::int AS orders FROM jobs WHERE state = 'succeeded'",
  );
  expect(jobs).toEqual({ jobs: 400, orders: 400 });
  const [vacuums] = await coordinator.db.query<{ n: number }>(
    "SELECT vacuum_count::int AS n FROM pg_stat_user_tables WHERE relname = 'work_orders'",
  );
  // Each job's claim and end, and the enqueue, count toward a run every 50.
  expect(vacuums!.n).toBeGreaterThanOrEqual(5);
}, 90_000);
