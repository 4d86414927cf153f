// Signalling a job's process group when all that is left of it belongs to another user: kill(2)
// fails with EPERM, and an agent must take that as nothing of the job's own left to stop.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { afterAll, expect, it } from "vitest";

const foreign: number[] = [];
afterAll(() => foreign.forEach((pid) => process.kill(-pid, "SIGKILL")));

// Needs root, to run the agent's side as another user; the machines that run this suite run it as root.
const root = process.getuid?.() === 0;
it.runIf(root)(`a group holding only another user's processes is signalled without an error${root ? "" : " (skipped: needs root)"}`, async () => {
  // A group of root's alone, as a job's becomes once only the `sudo` it started is left.
  const sleeper = spawn("sleep", ["30"], { detached: true, stdio: "ignore" });
  foreign.push(sleeper.pid!);
  const fixture = fileURLToPath(new URL("./fixtures/signal-group.ts", import.meta.url));
  const agent = spawn("runuser", ["-u", "nobody", "--", process.execPath, "--import", "tsx", fixture, String(sleeper.pid)], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  agent.stdout!.setEncoding("utf8").on("data", (text: string) => (output += text));
  agent.stderr!.setEncoding("utf8").on("data", (text: string) => (output += text));
  const [code] = (await once(agent, "exit")) as [number];
  expect({ code, output }).toEqual({ code: 0, output: "signalled\n" });
  expect(sleeper.exitCode).toBeNull();
});
