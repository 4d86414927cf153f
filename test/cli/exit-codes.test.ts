// `run` exits as the job did, and never 0 for a job that did not succeed.
import { expect, it } from "vitest";
import { exitCodeOf, RUN_EXIT } from "../../cli/commands/work.ts";

it("a failed job exits with its own code only where that code says failure", () => {
  expect(exitCodeOf("succeeded", 0)).toBe(0);
  expect(exitCodeOf("failed", 3)).toBe(3);
  expect(exitCodeOf("failed", 255)).toBe(255);
  // A job stopped at a drain whose process exited 0, a signal death, a code no process can exit with.
  for (const code of [0, null, 256, 512, -1]) expect(exitCodeOf("failed", code)).toBe(RUN_EXIT.failed);
});

it("every ending has a code: lost and returned ones as failed, timed out 124, cancelled 130", () => {
  expect(exitCodeOf("lost", null)).toBe(RUN_EXIT.failed);
  expect(exitCodeOf("returned", null)).toBe(RUN_EXIT.failed);
  expect(exitCodeOf("timed_out", 143)).toBe(124);
  expect(exitCodeOf("cancelled", null)).toBe(130);
  expect(() => exitCodeOf("running", null)).toThrow(/still running/);
});
