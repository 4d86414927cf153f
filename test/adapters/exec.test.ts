import { spawn } from "node:child_process";
import { once } from "node:events";
import { chmod, mkdtemp, readdir, readFile, realpath, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { execAdapter } from "../../adapters/exec.ts";
import { execSpec, MAX_ARGUMENT_BYTES } from "../../protocol/adapter-specs.ts";
import type { Adapter, Run } from "../../adapters/adapter.ts";
import { adapterContract, startRun } from "./contract.ts";

adapterContract("exec", () => ({
  invalid: { command: ["true"], script: "true" },
  succeeds: { spec: { script: "echo one; echo two; echo three" }, lines: ["one", "two", "three"] },
  fails: { command: ["false"] },
  longRun: { command: ["sleep", "1000"] },
  graceMs: 2000,
}));

const exec: Adapter<unknown> = execAdapter;

// A failed assertion must not leave a `sleep 1000` behind (a run already cancelled keeps its own grace).
const runs: Run[] = [];
// Processes a job left outside its group (setsid), which no cancel reaches.
const strays: number[] = [];
afterEach(async () => {
  for (const pid of strays.splice(0)) signal(pid, "SIGKILL");
  await Promise.all(runs.splice(0).map((run) => run.cancel(0).then(() => run.result)));
});

async function start(spec: unknown, onLog?: (text: string) => void) {
  const started = await startRun(exec, spec, onLog);
  runs.push(started.run);
  return started;
}

async function run(spec: unknown) {
  const { run, output } = await start(spec);
  const result = await run.result;
  return { ...result, output: output() };
}

/** Starts `spec` and resolves once its output contains `marker`, with the output so far. */
async function startUntil(spec: unknown, marker: string) {
  let seen = "";
  let markerSeen!: (text: string) => void;
  const ready = new Promise<string>((resolve) => (markerSeen = resolve));
  const started = await start(spec, (text) => {
    seen += text;
    if (seen.includes(marker)) markerSeen(seen);
  });
  return { ...started, ready };
}

/** Processes in group `pgid` that are still alive (zombies are dead, merely not yet reaped). */
async function liveMembers(pgid: number): Promise<number[]> {
  const live: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    // Fields after the parenthesised command name: state, ppid, pgrp, …
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(pgrp) === pgid && state !== "Z") live.push(Number(entry));
  }
  return live;
}

/** A killed process closes its pipes a moment before it turns zombie, so its group may outlive `result` briefly. */
async function expectGroupGone(pgid: number): Promise<void> {
  await vi.waitFor(async () => expect(await liveMembers(pgid)).toEqual([]));
}

describe("exec adapter", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await realpath(await mkdtemp(join(tmpdir(), "jobfleet-exec-")));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("passes argv verbatim, without a shell", async () => {
    const args = ["a b", "it's", '"quoted"', "$HOME", "*", "", "back\\slash"];
    const result = await run({ command: ["printf", "[%s]", ...args] });
    expect(result).toMatchObject({ outcome: "succeeded", exitCode: 0 });
    expect(result.output).toBe(args.map((arg) => `[${arg}]`).join(""));
  });

  it("runs a script with the shell it names", async () => {
    const result = await run({ script: 'echo "$0 ${BASH_VERSION:+is bash}"', shell: "/bin/bash" });
    expect(result.output).toBe("/bin/bash is bash\n");
  });

  it("runs a script of the largest size a spec takes (one argument to the shell)", async () => {
    const script = `echo big #${"x".repeat(MAX_ARGUMENT_BYTES - 11)}`;
    expect(execSpec.safeParse({ script }).success).toBe(true);
    expect(execSpec.safeParse({ script: `${script}x` }).success).toBe(false);
    const { run } = await start({ script });
    expect((await run.result).outcome).toBe("succeeded");
  });

  it("runs a script with /bin/sh by default", async () => {
    expect((await run({ script: 'echo "$0"' })).output).toBe("/bin/sh\n");
  });

  it("passes stdout and stderr both", async () => {
    const result = await run({ script: "echo out; echo err >&2" });
    expect(result.output.split("\n").sort()).toEqual(["", "err", "out"]);
  });

  describe("environment", () => {
    beforeAll(() => {
      process.env.JOBFLEET_TOKEN = "secret-token";
      process.env.EXEC_TEST_INHERITED = "inherited";
    });
    afterAll(() => {
      delete process.env.JOBFLEET_TOKEN;
      delete process.env.EXEC_TEST_INHERITED;
    });

    it("inherits the agent's environment without its JOBFLEET_ settings", async () => {
      const result = await run({ script: 'echo "${JOBFLEET_TOKEN-unset} $EXEC_TEST_INHERITED"' });
      expect(result.output).toBe("unset inherited\n");
    });

    it("names the job", async () => {
      const result = await run({ script: 'echo "$JOBFLEET_JOB_ID $JOBFLEET_WORK_ORDER_ID $JOBFLEET_ATTEMPT"' });
      expect(result.output).toBe("job-1 wo-1 1\n");
    });

    it("adds the spec's env, which wins", async () => {
      const result = await run({
        script: 'echo "$GREETING|$EXEC_TEST_INHERITED|$JOBFLEET_ATTEMPT"',
        env: { GREETING: "hello world", EXEC_TEST_INHERITED: "overridden", JOBFLEET_ATTEMPT: "7" },
      });
      expect(result.output).toBe("hello world|overridden|7\n");
    });
  });

  it("runs in the spec's cwd", async () => {
    expect((await run({ command: ["pwd", "-P"], cwd: dir })).output).toBe(`${dir}\n`);
  });

  it("runs in the agent's cwd by default", async () => {
    expect((await run({ command: ["pwd", "-P"] })).output).toBe(`${await realpath(process.cwd())}\n`);
  });

  it("fails with the process's exit code", async () => {
    expect(await run({ script: "exit 3" })).toMatchObject({ outcome: "failed", exitCode: 3 });
  });

  it("fails, naming the signal, when the process is killed", async () => {
    const result = await run({ script: "kill -KILL $$" });
    expect(result).toMatchObject({ outcome: "failed", exitCode: null });
    expect(result.error).toContain("SIGKILL");
  });

  it("fails with a clear message when the command does not exist", async () => {
    const result = await run({ command: ["jobfleet-no-such-command", "arg"] });
    expect(result).toMatchObject({ outcome: "failed", exitCode: null });
    expect(result.error).toBe("command not found: jobfleet-no-such-command");
  });

  it("names the missing interpreter of a script that exists, not the script, by path or along the job's PATH", async () => {
    const script = async (name: string, text: string) => {
      await writeFile(join(dir, name), text);
      await chmod(join(dir, name), 0o755);
      return join(dir, name);
    };
    const elsewhere = await script("for-another-image", "#!/usr/bin/jobfleet-no-such-interpreter -e\necho built\n");
    expect(await run({ command: [elsewhere] })).toMatchObject({
      outcome: "failed",
      exitCode: null,
      error: `interpreter not found: /usr/bin/jobfleet-no-such-interpreter, named on the first line of ${elsewhere}`,
    });
    expect((await run({ command: ["for-another-image"], env: { PATH: `${dir}:/usr/bin:/bin` } })).error).toBe(
      "interpreter not found: /usr/bin/jobfleet-no-such-interpreter, named on the first line of for-another-image",
    );
    const crlf = await script("from-windows", "#!/bin/sh\r\necho built\r\n");
    expect((await run({ command: [crlf] })).error).toBe(
      `interpreter not found: /bin/sh, named on the first line of ${crlf} (its lines end in CR LF, and the CR is read as part of the name)`,
    );
    // Not on the job's PATH at all: not found, whatever lies elsewhere.
    expect((await run({ command: ["for-another-image"], env: { PATH: "/usr/bin:/bin" } })).error).toBe("command not found: for-another-image");
  });

  it("fails with a clear message when the command is not executable", async () => {
    const file = join(dir, "not-executable");
    await writeFile(file, "#!/bin/sh\n");
    await chmod(file, 0o644);
    const result = await run({ command: [file] });
    expect(result).toMatchObject({ outcome: "failed", exitCode: null, error: `permission denied: ${file}` });
  });

  it("fails with a clear message when the cwd does not exist", async () => {
    const cwd = join(dir, "missing");
    const result = await run({ command: ["true"], cwd });
    expect(result).toMatchObject({ outcome: "failed", exitCode: null });
    expect(result.error).toContain(cwd);
    expect(result.error).not.toContain("command not found");
  });

  it("delivers large output complete and in order", async () => {
    const result = await run({ command: ["seq", "1", "800000"] });
    const expected = Array.from({ length: 800_000 }, (_, i) => `${i + 1}\n`).join("");
    expect(result.output.length).toBeGreaterThan(5_000_000);
    expect(result.output === expected).toBe(true);
  });

  it("keeps a multi-byte character whole when it arrives split across chunks", async () => {
    // The pause makes the three bytes of € reach the agent in two reads.
    const result = await run({ script: String.raw`printf '\342\202'; sleep 0.2; printf '\254\n'` });
    expect(result.output).toBe("€\n");
  });

  it("keeps multi-byte characters whole across pipe-sized chunks", async () => {
    const result = await run({ script: "yes 'ä€😀' | head -n 50000" });
    expect(result.output).toBe("ä€😀\n".repeat(50_000));
  });

  it("settles when the process exits, killing what it left running in the background", async () => {
    const result = await run({ script: "sleep 1000 & echo $$" });
    expect(result.outcome).toBe("succeeded");
    await expectGroupGone(Number(result.output));
  });

  describe("when something outside the group holds the output", () => {
    // `setsid` puts the sleep in a group of its own, where the kill at the job's exit does not reach it.
    it("settles soon after the process exits, with what was written before the deadline", async () => {
      // The job exits only once the stray has left its group (it says so through the fifo): had the
      // kill at the exit come first, it would have taken the stray, and "late" with it.
      const script = `f=$(mktemp -u); mkfifo "$f"; setsid sh -c 'echo > "$0"; sleep 0.3; echo late; exec sleep 30' "$f" & read _ < "$f"; rm "$f"; echo $!; exit 3`;
      const { run, ready, output } = await startUntil({ script }, "\n");
      strays.push(Number(await ready));
      expect(await within(run.result, 10_000)).toEqual({ outcome: "failed", exitCode: 3 });
      expect(output()).toMatch(/^\d+\nlate\n$/);
    });

    it("keeps the result of a process that exited on its own when a cancel comes after", async () => {
      const { run, ready } = await startUntil({ script: "setsid sleep 30 & echo $$ $!" }, "\n");
      const [leader, stray] = (await ready).trim().split(" ").map(Number);
      strays.push(stray!);
      await vi.waitFor(() => expect(alive(leader!)).toBe(false));
      await run.cancel(0);
      expect(await within(run.result, 10_000)).toEqual({ outcome: "succeeded", exitCode: 0 });
    });
  });

  it("cancel gives the group its grace even when the script itself dies at once", async () => {
    // The shell dies of the SIGTERM; its child takes a while to clean up, within the grace.
    const script = `sh -c 'trap "sleep 0.5; echo cleaned up; exit" TERM; echo ready; sleep 1000 & wait' & wait`;
    const { run, ready, output } = await startUntil({ script }, "ready");
    await ready;
    await run.cancel(5000);
    expect(await within(run.result, 10_000)).toEqual({ outcome: "cancelled", exitCode: null });
    expect(output()).toBe("ready\ncleaned up\n");
  });

  it("what a cancelled job leaves in its group, its output closed, is killed when the run ends, not at the end of the grace", async () => {
    // The shell dies of the SIGTERM; a child that ignores it, with no hold on the output, stays.
    const script = `(trap "" TERM; exec sleep 1000) >/dev/null 2>&1 & echo $$; sleep 1000`;
    const { run, ready } = await startUntil({ script }, "\n");
    const pgid = Number(await ready);
    await run.cancel(60_000);
    expect(await within(run.result, 10_000)).toEqual({ outcome: "cancelled", exitCode: null });
    await expectGroupGone(pgid);
  });

  it("a later cancel with a shorter grace brings the SIGKILL forward", async () => {
    const { run, ready } = await startUntil({ script: "trap '' TERM; echo ready; sleep 1000 & wait" }, "ready");
    await ready;
    await run.cancel(30_000);
    await run.cancel(0);
    expect(await within(run.result, 10_000)).toEqual({ outcome: "cancelled", exitCode: null });
  });

  it("cancel kills the whole process group", async () => {
    const { run, ready } = await startUntil({ script: "sleep 1000 & sleep 1000 & echo $$; wait" }, "\n");
    const pgid = Number(await ready);
    expect((await liveMembers(pgid)).length).toBe(3);
    await run.cancel(5000);
    expect((await run.result).outcome).toBe("cancelled");
    await expectGroupGone(pgid);
  });

  it("cancel sends SIGTERM to the whole group, so a job can clean up after its children", async () => {
    // The trap waits for its child, which only ends this soon if it got the SIGTERM too. The child says
    // "ready" once it is its own program: signalled earlier, it could die of the parent's trap instead.
    const script = "trap 'wait; echo cleaned up; exit 5' TERM; sh -c 'echo ready; exec sleep 1000' & wait";
    const { run, ready, output } = await startUntil({ script }, "ready");
    await ready;
    await run.cancel(3000);
    expect(await run.result).toEqual({ outcome: "cancelled", exitCode: 5 });
    expect(output()).toBe("ready\ncleaned up\n");
  });

  it("cancel SIGKILLs a process that ignores SIGTERM once the grace is over", async () => {
    const graceMs = 200;
    const { run, ready } = await startUntil({ script: "trap '' TERM; echo $$; sleep 1000 & wait" }, "\n");
    const pgid = Number(await ready);
    const cancelledAt = performance.now();
    await run.cancel(graceMs);
    expect(await run.result).toEqual({ outcome: "cancelled", exitCode: null });
    // It took SIGKILL, which only comes after the grace.
    expect(performance.now() - cancelledAt).toBeGreaterThanOrEqual(graceMs - 20);
    await expectGroupGone(pgid);
  });

  it("cancel resolves once the signal is sent, not when the process has gone", async () => {
    const { run, ready } = await startUntil({ script: "trap '' TERM; echo ready; sleep 1000 & wait" }, "ready");
    await ready;
    let settled = false;
    void run.result.then(() => (settled = true));
    await run.cancel(300);
    expect(settled).toBe(false);
    expect((await run.result).outcome).toBe("cancelled");
  });

  it("cancel after the run ended does nothing: no signal goes to a process group id that may have been reused", async () => {
    const { run } = await start({ command: ["true"] });
    expect((await run.result).outcome).toBe("succeeded");
    const kill = vi.spyOn(process, "kill");
    try {
      await run.cancel(100);
      expect(kill).not.toHaveBeenCalled();
    } finally {
      kill.mockRestore();
    }
    expect((await run.result).outcome).toBe("succeeded");
  });

  it("cancel of a run that never started leaves it failed", async () => {
    const { run } = await start({ command: ["jobfleet-no-such-command"] });
    await run.cancel(100);
    expect((await run.result).outcome).toBe("failed");
  });

  it("has no external id or url", async () => {
    const { run } = await start({ command: ["true"] });
    await run.result;
    expect(run.externalId).toBeUndefined();
    expect(run.externalUrl).toBeUndefined();
  });
});

describe("when the agent dies", () => {
  it("its jobs die with it, grandchildren included, even when it is SIGKILLed", async () => {
    const agent = spawn(process.execPath, ["--import", "tsx", fileURLToPath(new URL("./fixtures/run-exec.ts", import.meta.url))], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const [line] = (await once(agent.stdout!.setEncoding("utf8"), "data")) as [string];
    const sleeper = Number(line.trim());
    expect(alive(sleeper)).toBe(true);
    agent.kill("SIGKILL");
    await vi.waitFor(() => expect(alive(sleeper)).toBe(false), { timeout: 5000, interval: 20 });
  });
});

function alive(pid: number): boolean {
  return signal(pid, 0);
}

function signal(pid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** What `promise` settles to, or "pending" if it takes longer than `ms`. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | "pending"> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"pending">((resolve) => (timer = setTimeout(resolve, ms, "pending")));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
