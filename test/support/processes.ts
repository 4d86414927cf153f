// Real `jobfleet` processes for end-to-end tests: started from bin/jobfleet.js, their stderr
// (pino JSON lines and CLI messages) watched for the lines that say they are ready.
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

export const BIN = fileURLToPath(new URL("../../bin/jobfleet.js", import.meta.url));

export type Exit = { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string };

export class JobfleetProcess {
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  readonly exited: Promise<Exit>;
  private readonly watchers = new Set<() => void>();

  constructor(args: string[], env: Record<string, string | undefined> = {}) {
    this.child = spawn(process.execPath, [BIN, ...args], {
      // Nothing from the shell that runs the tests picks their coordinator or database for them.
      env: { ...process.env, JOBFLEET_URL: undefined, JOBFLEET_TOKEN: undefined, DATABASE_URL: undefined, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout!.setEncoding("utf8").on("data", (text: string) => this.seen(() => (this.stdout += text)));
    this.child.stderr!.setEncoding("utf8").on("data", (text: string) => this.seen(() => (this.stderr += text)));
    this.exited = new Promise((resolve) =>
      this.child.on("close", (code, signal) => {
        this.seen(() => {});
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr });
      }),
    );
  }

  private seen(append: () => void): void {
    append();
    for (const watcher of this.watchers) watcher();
  }

  /** Resolves with the first match of `pattern` in stderr; rejects if the process exits first. */
  waitFor(pattern: RegExp): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const match = this.stderr.match(pattern);
        if (match) {
          this.watchers.delete(check);
          resolve(match);
        } else if (this.child.exitCode !== null || this.child.signalCode !== null) {
          this.watchers.delete(check);
          reject(new Error(`process exited before ${pattern}:\n${this.stderr}`));
        }
      };
      this.watchers.add(check);
      check();
    });
  }

  /** Resolves when a pino line with this `msg` (and the given fields) appears. */
  waitForLog(msg: string, fields: Record<string, unknown> = {}): Promise<unknown> {
    const escaped = msg.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const pairs = Object.entries(fields).map(([k, v]) => `(?=[^\\n]*"${k}":${JSON.stringify(v).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")})`);
    return this.waitFor(new RegExp(`^${pairs.join("")}[^\\n]*"msg":"${escaped}"`, "m"));
  }

  /** Sends `signal`; a process still alive 20 s later is SIGKILLed, so no suite hangs on one. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<Exit> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    const escalate = setTimeout(() => {
      process.stderr.write(`jobfleet ${this.child.spawnargs.slice(2).join(" ")} ignored ${signal} for 20 s; killing it\n`);
      this.child.kill("SIGKILL");
    }, 20_000);
    try {
      return await this.exited;
    } finally {
      clearTimeout(escalate);
    }
  }
}

export function jobfleet(args: string[], env?: Record<string, string | undefined>): JobfleetProcess {
  return new JobfleetProcess(args, env);
}
