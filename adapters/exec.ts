// Runs a job as a local process, in its own process group so a cancel reaches everything it started.
import { once } from "node:events";
import { access, constants, stat } from "node:fs/promises";
import { execa, type Result, type Subprocess } from "execa";
import { execSpec, type ExecSpec } from "../protocol/adapter-specs.ts";
import { AdapterError, type Adapter, type RunContext, type RunResult } from "./adapter.ts";
import { processGroup } from "./process-group.ts";

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
