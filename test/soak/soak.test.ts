// A small seeded soak in every test run; `npm run soak` runs the full one (500+ work orders).
import { expect, test } from "vitest";
import { runSoak, summary } from "./soak.ts";

test("under agent kills, coordinator kills and Postgres restarts, every work order ends exactly once, whole", async () => {
  const report = await runSoak({ orders: 60, agents: 3, capacity: 3, seed: 20261123, lines: 40, log: (line) => console.log(line) });
  console.log(summary(report));
  expect(report.problems).toEqual([]);
  expect(report.overlaps).toEqual([]);
  expect(report.succeeded).toBe(60);
  expect(report.kills.agent).toBeGreaterThan(0);
  expect(report.kills.coordinator).toBeGreaterThan(0);
  expect(report.kills.postgres).toBeGreaterThan(0);
}, 240_000);
