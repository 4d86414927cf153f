// Runs a job as a local process, in its own process group so a cancel reaches everything it started.
import { once } from "node:events";
import { access, constants, open, stat } from "node:fs/promises";
import { resolve } from "node:path";
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
    const env = jobEnv(ctx);
    const child = execa(file, args, {
      cwd,
      env,
      extendEnv: false,
      detached: true,
      stdin: "ignore",
      buffer: false,
      reject: false,
    });
    forwardOutput(child, ctx.log);
    const group = processGroup(child);
    const result = child.then((r) => runResult(r, group.cancelled, { file, cwd, path: env.PATH }));
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

/** What was asked to start: the program, where, and the PATH it was looked up in. */
type Started = { file: string; cwd: string; path: string | undefined };

async function runResult(r: Result, cancelled: boolean, started: Started): Promise<RunResult> {
  const exitCode = r.exitCode ?? null;
  if (cancelled) return { outcome: "cancelled", exitCode };
  if (!r.failed) return { outcome: "succeeded", exitCode: 0 };
  if (exitCode !== null) return { outcome: "failed", exitCode };
  if (r.signal !== undefined) return { outcome: "failed", exitCode: null, error: `killed by ${r.signal}` };
  return { outcome: "failed", exitCode: null, error: await spawnFailure(r.code, started) };
}

async function spawnFailure(code: string | undefined, { file, cwd, path }: Started): Promise<string> {
  // spawn blames a bad cwd on the command (ENOENT/EACCES), so rule the cwd out first.
  const badCwd = await cwdProblem(cwd);
  if (badCwd !== undefined) return badCwd;
  if (code === "ENOENT") return notFound(file, cwd, path);
  if (code === "EACCES") return `permission denied: ${file}`;
  return `could not start ${file}: ${code ?? "unknown error"}`;
}

/**
 * What was not found: spawn says ENOENT for a program that exists when the interpreter its `#!`
 * line names does not (a script written for another image, or with Windows line endings).
 */
async function notFound(file: string, cwd: string, path: string | undefined): Promise<string> {
  const found = await locate(file, cwd, path);
  if (found === undefined) return `command not found: ${file}`;
  const line = await firstLine(found);
  if (!line.startsWith("#!")) return `could not start ${file}: ENOENT (a program it needs to load is missing)`;
  const interpreter = line.slice(2).trim().split(/\s+/)[0] ?? "";
  const crlf = line.endsWith("\r") ? " (its lines end in CR LF, and the CR is read as part of the name)" : "";
  return `interpreter not found: ${interpreter}, named on the first line of ${file}${crlf}`;
}

/** The executable `file` would run as, looked up as spawn does: by its path, or along PATH. */
async function locate(file: string, cwd: string, path: string | undefined): Promise<string | undefined> {
  const candidates = file.includes("/") ? [resolve(cwd, file)] : (path ?? "").split(":").map((dir) => resolve(cwd, dir, file));
  for (const candidate of candidates) {
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
}

async function firstLine(file: string): Promise<string> {
  const handle = await open(file, "r").catch(() => undefined);
  if (!handle) return "";
  try {
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(256), 0, 256, 0);
    return buffer.subarray(0, bytesRead).toString("latin1").split("\n")[0]!;
  } finally {
    await handle.close();
  }
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
