// A small seeded soak in every test run; `npm run soak` runs the full one (500+ work orders).
import { expect, test } from "vitest";
import { overlappingMarks, runSoak, summary } from "./soak.ts";

test("the marks check finds attempts of one work order that overlap in time, and only those", () => {
  const marks = ["1 1 start 100", "1 1 end 200", "1 2 start 150", "1 2 end 300", "2 1 start 100", "2 2 start 400", "2 2 end 500", "3 1 start 1", "3 1 end 2", "3 2 start 2", "3 2 end 3"];
  expect(overlappingMarks(marks.join("\n"))).toEqual(["1: attempts 1 and 2"]);
});

test("under agent kills, coordinator kills and Postgres restarts, every work order ends exactly once, whole", async () => {
  // Six slots for sixty orders of about a second each: work lasts past the first faults. Each
  // agent holds a job ahead, which a kill leaves to the reaper to return.
  const report = await runSoak({ orders: 60, agents: 3, capacity: 2, prefetch: 1, seed: 20261123, lines: 40, log: (line) => console.log(line) });
  console.log(summary(report));
  expect(report.problems).toEqual([]);
  expect(report.overlaps).toEqual([]);
  expect(report.succeeded).toBe(60);
  expect(report.kills.agent).toBeGreaterThan(0);
  expect(report.kills.coordinator).toBeGreaterThan(0);
  expect(report.kills.postgres).toBeGreaterThan(0);
  expect(report.lost).toBeGreaterThan(0);
  expect(report.retries).toBeGreaterThanOrEqual(report.lost);
}, 240_000);
