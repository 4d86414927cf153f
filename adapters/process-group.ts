// The process group a job runs in: cancelled with a grace, then killed, and killed whenever the
// agent dies, so nothing a job started outlives its run or its agent.
import { type ChildProcess, spawn } from "node:child_process";
import type { ResultPromise } from "execa";

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

export function processGroup(child: ResultPromise): ProcessGroup {
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

/**
 * Signals every process of the group that is still there. kill(2) fails with EPERM only when it
 * could signal none of them: what is left belongs to another user (a `sudo` the job started, say),
 * and nothing of the job's own is left to stop.
 */
export function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch (error) {
    const { code } = error as NodeJS.ErrnoException;
    if (code !== "ESRCH" && code !== "EPERM") throw error;
  }
}
