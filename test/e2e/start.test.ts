// The quick start as the README gives it: `jobfleet start` (what `npm start` runs) brings up a
// coordinator on the embedded database and a local agent, and the next command runs a job.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { platform, tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "vitest";
import { listening } from "../support/fleet.ts";
import { jobfleet, type JobfleetProcess } from "../support/processes.ts";

test("jobfleet start serves a local agent, and jobfleet run finds it with the saved CI token", { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "jobfleet-start-"));
  const env = { JOBFLEET_DATA_DIR: join(dir, ".jobfleet") };
  const start = jobfleet(["start", "--listen", "127.0.0.1:0", "--prefetch", "1"], env);
  const others: JobfleetProcess[] = [];
  try {
    const url = await listening(start);
    await start.waitFor(/"msg":"agent connected"/);
    expect(start.stderr).toMatch(/agent {8}local {2}labels os=linux,arch=\S+, capacity \d+, prefetch 1\n/);
    // The command it shows selects this machine's agent, whatever its OS.
    expect(start.stderr).toContain(`npx jobfleet run --selector 'os=${platform()}' -- sh -c 'echo hello; exit 3'`);
    const run = jobfleet(["run", "--selector", "os=linux", "--", "sh", "-c", "echo hello; exit 3"], { ...env, JOBFLEET_URL: url });
    expect(await run.exited).toMatchObject({ code: 3, stdout: "hello\n" });
    // An admin token, shown once, manages the tokens; the database is its owner's alone.
    const admin = /No admin token existed, so one was made\. It is shown this once:\n\n {2}(jft_\S+)\n/.exec(start.stderr)?.[1];
    expect(admin).toBeDefined();
    const tokens = jobfleet(["tokens", "list", "--json"], { ...env, JOBFLEET_URL: url, JOBFLEET_TOKEN: admin! });
    const listed = await tokens.exited;
    expect(listed.code).toBe(0);
    expect((JSON.parse(listed.stdout) as { items: { role: string }[] }).items.map((t) => t.role)).toEqual(["admin", "ci", "agent"]);
    expect(statSync(join(dir, ".jobfleet")).mode & 0o777).toBe(0o700);
    // A second coordinator on its data directory, or at its address, says why it cannot, in one line.
    others.push(jobfleet(["coordinator", "--listen", "127.0.0.1:0"], env));
    expect(await others[0]!.exited).toMatchObject({ code: 1, stderr: expect.stringMatching(/^jobfleet: the data directory \S+ is in use by process \d+ [^\n]*\n$/) });
    others.push(jobfleet(["coordinator", "--listen", new URL(url).host], { JOBFLEET_DATA_DIR: join(dir, "other") }));
    expect(await others[1]!.exited).toMatchObject({ code: 1, stderr: expect.stringMatching(/^jobfleet: cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\)[^\n]*\n$/) });
    // Revoked on purpose, it is not made again at the next start, nor its secret written to the log.
    const adminId = (JSON.parse(listed.stdout) as { items: { id: string }[] }).items[0]!.id;
    expect((await jobfleet(["tokens", "revoke", adminId], { ...env, JOBFLEET_URL: url, JOBFLEET_TOKEN: admin! }).exited).code).toBe(0);
    await start.stop("SIGTERM");
    const again = jobfleet(["start", "--listen", "127.0.0.1:0"], env);
    others.push(again);
    await listening(again);
    await again.waitFor(/"msg":"agent connected"/);
    expect(again.stderr).not.toMatch(/No admin token existed/);
  } finally {
    // Those that did not refuse to start, as they should have, are not left running.
    await Promise.all(others.map((other) => other.stop("SIGKILL")));
    await start.stop("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }
});

test("jobfleet start takes its agent's name and capacity from the environment as from flags, and saves its CI token for its owner alone", { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "jobfleet-start-"));
  // A token file left readable to others by hand: the new token must not land in it as it is.
  const tokenFile = join(dir, ".jobfleet", "ci-token");
  mkdirSync(join(dir, ".jobfleet"), { mode: 0o700 });
  writeFileSync(tokenFile, "jft_1_stale\n", { mode: 0o644 });
  const start = jobfleet(["start", "--listen", "127.0.0.1:0"], { JOBFLEET_DATA_DIR: join(dir, ".jobfleet"), JOBFLEET_NAME: "from-env", JOBFLEET_CAPACITY: "1" });
  try {
    await listening(start);
    await start.waitFor(/agent {8}from-env {2}labels \S+, capacity 1\n/);
    expect(readFileSync(tokenFile, "utf8")).toMatch(/^jft_(?!1_stale)\S+\n$/);
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
  } finally {
    await start.stop("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }
});
