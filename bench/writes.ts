// Write system calls of one process so far (`syscw` in /proc/PID/io): each hands the kernel one
// buffer or one vector of them, and on loopback the receiver's side of TCP runs inside it, so on
// two shared cores they are much of a party's cost per job.
import { readFileSync } from "node:fs";

/** Calls to write and writev (how libuv writes a socket) the process has made, or 0 once it is gone. */
export function processWrites(pid: number | undefined): number {
  try {
    return Number(/^syscw: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, "utf8"))?.[1] ?? 0);
  } catch {
    return 0;
  }
}
