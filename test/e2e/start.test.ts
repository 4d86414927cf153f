// The quick start as the README gives it: `jobfleet start` (what `npm start` runs) brings up a
// coordinator on the embedded database and a local agent, and the next command runs a job.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "vitest";
import { listening } from "../support/fleet.ts";
import { jobfleet } from "../support/processes.ts";

test("jobfleet start serves a local agent, and jobfleet run finds it with the saved CI token", { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "jobfleet-start-"));
  const env = { JOBFLEET_DATA_DIR: join(dir, ".jobfleet") };
  const start = jobfleet(["start", "--listen", "127.0.0.1:0", "--prefetch", "1"], env);
  try {
    const url = await listening(start);
    await start.waitFor(/"msg":"agent connected"/);
    expect(start.stderr).toMatch(/agent {8}local {2}labels os=linux,arch=\S+, capacity \d+, prefetch 1\n/);
    const run = jobfleet(["run", "--selector", "os=linux", "--", "sh", "-c", "echo hello; exit 3"], { ...env, JOBFLEET_URL: url });
    expect(await run.exited).toMatchObject({ code: 3, stdout: "hello\n" });
  } finally {
    await start.stop("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }
});
