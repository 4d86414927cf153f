// Runs a job as a local process, in its own process group so a cancel reaches everything it started.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { access, constants, stat } from "node:fs/promises";
import { execa, type Result, type ResultPromise, type Subprocess } from "execa";
import { execSpec, type ExecSpec } from "../protocol/adapter-specs.ts";
import { AdapterError, type Adapter, type RunContext, type RunResult } from "./adapter.ts";

export const execAdapter: Adapter<ExecSpec> = {
  name: "exec",
  spec: execSpec,
  async start(ctx) {
    const [file, args] = commandLine(ctx.spec);
    const cwd = ctx.spec.cwd ?? process.cwd();
    const child = execa(file, args, {
      cwd,
      env: jobEnv(ctx),
      extendEnv: false,
      detached: true,
      stdin: "ignore",
      buffer: false,
      reject: false,
    });
    forwardOutput(child, ctx.log);
    const group = processGroup(child);
    const result = child.then((r) => runResult(r, group.cancelled, file, cwd));
    // A spawn error is the job's failure, not start()'s: wait for `result` to carry it, so a later cancel can't relabel it.
    await Promise.race([once(child, "spawn"), result]).catch(() => result);
    return { result, cancel: group.cancel };
  },
};

function commandLine(spec: ExecSpec): [file: string, args: string[]] {
  if (spec.script !== undefined) return [spec.shell ?? "/bin/sh", ["-c", spec.script]];
  const [file, ...args] = spec.command ?? [];
  if (file === undefined) throw new AdapterError("exec spec has neither command nor script");
  return [file, args];
}

/** The agent's environment without its own JOBFLEET_* settings (its token among them). */
function jobEnv(ctx: RunContext<ExecSpec>): Record<string, string> {
  const inherited = Object.entries(process.env).filter(
    (entry): entry is [string, string] => entry[1] !== undefined && !entry[0].startsWith("JOBFLEET_"),
  );
  return {
    ...Object.fromEntries(inherited),
    JOBFLEET_JOB_ID: ctx.jobId,
    JOBFLEET_WORK_ORDER_ID: ctx.workOrderId,
    JOBFLEET_ATTEMPT: String(ctx.attempt),
    ...ctx.spec.env,
  };
}

function forwardOutput(child: Subprocess, log: (text: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    // Each stream decodes on its own, so a character split across chunks is joined before the other stream cuts in.
    stream?.setEncoding("utf8");
    stream?.on("data", log);
  }
}

type ProcessGroup = { readonly cancelled: boolean; cancel(graceMs: number): Promise<void> };

/**
 * Kills the job's process group when the agent dies, however it dies (SIGKILL included), so a job
 * never outlives the agent that answers for it: a shell in a group of its own waits for the end of
 * a pipe that only the agent holds. It is killed first when the group is (at the job's exit, at the
 * end of a cancel's grace, or when the run has ended), so it never signals a group id that may
 * since have been reused.
 */
function watchdog(pgid: number): ChildProcess {
  const dog = spawn("/bin/sh", ["-c", 'read -r _; kill -KILL "-$1" 2>/dev/null', "jobfleet-watchdog", String(pgid)], {
    detached: true,
    stdio: ["pipe", "ignore", "ignore"],
  });
  dog.unref();
  (dog.stdin as unknown as { unref(): void }).unref();
  return dog;
}

/** How long the output pipes may stay open once the job's group is gone: something outside it (setsid) may hold them. */
const PIPE_DEADLINE_MS = 1000;

function processGroup(child: ResultPromise): ProcessGroup {
  const pid = child.pid;
  const dog = pid === undefined ? undefined : watchdog(pid);
  let exited = false;
  let cancelled = false;
  let killed = false;
  let killAt = Infinity;
  let forceKill: NodeJS.Timeout | undefined;
  let pipeDeadline: NodeJS.Timeout | undefined;
  const kill = () => {
    clearTimeout(forceKill);
    killed = true;
    dog?.kill("SIGKILL");
    signalGroup(pid, "SIGKILL");
    if (!exited) return;
    // Execa's result waits for the pipes to close; it settles with the exit status once they are destroyed.
    pipeDeadline ??= setTimeout(() => {
      child.stdout?.destroy();
      child.stderr?.destroy();
    }, cancelled ? 0 : PIPE_DEADLINE_MS);
  };
  // Once the run has ended (its output closed), what is left of its group goes at once: no timer may
  // signal its group id later, when it may have been reused.
  void child.then(() => {
    clearTimeout(pipeDeadline);
    if (!killed) kill();
  });
  child.once("exit", () => {
    exited = true;
    // Whatever the job left running in its group would hold the output pipes open, and the result with them.
    // A cancel under way leaves that to its grace timer, so children still cleaning up get their grace.
    if (!cancelled || killed) kill();
  });
  return {
    get cancelled() {
      return cancelled;
    },
    async cancel(graceMs) {
      // Once the group is killed there is nothing left to stop: a job that ended on its own keeps its result,
      // even while something it left holds the pipes.
      if (killed) return;
      if (!cancelled) signalGroup(pid, "SIGTERM");
      cancelled = true;
      // A later, tighter stop brings the SIGKILL forward.
      const at = performance.now() + graceMs;
      if (at >= killAt) return;
      killAt = at;
      clearTimeout(forceKill);
      forceKill = setTimeout(kill, graceMs);
    },
  };
}

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
}

async function runResult(r: Result, cancelled: boolean, file: string, cwd: string): Promise<RunResult> {
  const exitCode = r.exitCode ?? null;
  if (cancelled) return { outcome: "cancelled", exitCode };
  if (!r.failed) return { outcome: "succeeded", exitCode: 0 };
  if (exitCode !== null) return { outcome: "failed", exitCode };
  if (r.signal !== undefined) return { outcome: "failed", exitCode: null, error: `killed by ${r.signal}` };
  return { outcome: "failed", exitCode: null, error: await spawnFailure(r.code, file, cwd) };
}

async function spawnFailure(code: string | undefined, file: string, cwd: string): Promise<string> {
  // spawn blames a bad cwd on the command (ENOENT/EACCES), so rule the cwd out first.
  const badCwd = await cwdProblem(cwd);
  if (badCwd !== undefined) return badCwd;
  if (code === "ENOENT") return `command not found: ${file}`;
  if (code === "EACCES") return `permission denied: ${file}`;
  return `could not start ${file}: ${code ?? "unknown error"}`;
}

async function cwdProblem(cwd: string): Promise<string | undefined> {
  try {
    if (!(await stat(cwd)).isDirectory()) return `working directory is not a directory: ${cwd}`;
    await access(cwd, constants.X_OK);
    return undefined;
  } catch (error) {
    return `working directory is not usable: ${cwd} (${(error as NodeJS.ErrnoException).code})`;
  }
}
