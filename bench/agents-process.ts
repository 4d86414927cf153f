// Child entry: K in-process agents on real WebSockets, whose adapter lookup answers a no-op adapter
// (the run succeeds at once, no process is spawned). The process boots while its coordinator
// starts; its agents are made and dial on `go {urls, token}`, so process start-up is not timed.
// A work order whose command is ["probe"] reports `started {workOrderId, t}` the moment its
// adapter starts, for the latency scenarios.
// For the log scenario: ["log", LINES, BYTES_PER_LINE] prints that many ASCII lines (each ending in
// "\n"; random lowercase words after a `job ID line N` label) through `ctx.log` in 4,096-byte chunks cut regardless of line ends, as a process's pipe
// reads would arrive, yielding to the event loop between chunks, then succeeds. ["log-probe",
// HOLD_MS] waits until the parent sends `print {workOrderId}` (once it follows the log; at most
// 30 s), then prints one line carrying its time, reports `logged {workOrderId, jobId, t, line}` as
// it does, and succeeds HOLD_MS later (so the line goes out on the batcher's own clock, not with
// the job's end).
import { pino } from "pino";
import type { Run, RunContext } from "../adapters/adapter.ts";
import type { Agent } from "../agent/agent.ts";
import { benchAgents, succeeded } from "./bench-agents.ts";
import { childConfig, send, serve, now } from "./support.ts";

export type AgentsConfig = { prefix: string; count: number; capacity: number; prefetch: number };
/** The coordinator the agents dial, told with `go`. */
export type AgentsGo = { type: "go"; urls: string[]; token: string };

const config = childConfig<AgentsConfig>();
const logger = pino({ level: "silent" });
let ran = 0;

const LOG_CHUNK_BYTES = 4096;

/** Random lowercase words that log lines are cut from, so Postgres cannot compress the stored log (real logs compress some). */
const FILLER = (() => {
  const words: string[] = [];
  for (let length = 0; length < 65_536; ) {
    const word = Array.from({ length: 2 + Math.floor(Math.random() * 9) }, () => String.fromCharCode(97 + Math.floor(Math.random() * 26))).join("");
    words.push(word);
    length += word.length + 1;
  }
  return words.join(" ");
})();

/** LINES lines of BYTES_PER_LINE bytes (at least the label and a newline), passed to `log` in pipe-sized chunks. */
async function printLines(log: (text: string) => void, jobId: string, lines: number, bytesPerLine: number): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve)); // output follows the start, as a process's does
  let text = "";
  for (let i = 0; i < lines; i++) {
    const label = `job ${jobId} line ${i} `;
    const length = Math.max(0, Math.min(bytesPerLine - 1 - label.length, FILLER.length));
    const from = (i * 7919 + Number(jobId) * 104_729) % (FILLER.length - length + 1);
    text += label + FILLER.slice(from, from + length) + "\n";
  }
  for (let at = 0; at < text.length; at += LOG_CHUNK_BYTES) {
    log(text.slice(at, at + LOG_CHUNK_BYTES));
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/** log-probe work orders waiting for the parent's `print`, and `print`s that came before their work order started here (or went to another agent process). */
const printWaiting = new Map<string, () => void>();
const printReleased = new Set<string>();
const PRINT_FALLBACK_MS = 30_000;

function printWhenReleased(workOrderId: string): Promise<void> {
  if (printReleased.delete(workOrderId)) return new Promise((resolve) => setImmediate(resolve));
  return new Promise((resolve) => {
    const release = () => {
      clearTimeout(timer);
      printWaiting.delete(workOrderId);
      resolve();
    };
    const timer = setTimeout(release, PRINT_FALLBACK_MS);
    printWaiting.set(workOrderId, release);
  });
}

/** The adapter's start: the probe and log commands above, or nothing. */
const start = async (ctx: RunContext<unknown>): Promise<Run> => {
  ran++;
  const command = (ctx.spec as { command?: unknown[] }).command;
  if (command?.[0] === "probe") send({ type: "started", workOrderId: ctx.workOrderId, t: now() });
  if (command?.[0] === "log") return succeeded(printLines(ctx.log, ctx.jobId, Number(command[1]), Number(command[2])));
  if (command?.[0] === "log-probe") {
    const held = printWhenReleased(ctx.workOrderId).then(() => {
      const t = now();
      const line = `probe ${ctx.workOrderId} ${t.toFixed(3)}\n`;
      ctx.log(line);
      send({ type: "logged", workOrderId: ctx.workOrderId, jobId: ctx.jobId, t, line });
      return new Promise<void>((resolve) => setTimeout(resolve, Number(command[1] ?? 0)));
    });
    return succeeded(held);
  }
  return succeeded();
};

let agents: Agent[] = [];

serve({
  go: (message) => {
    const { urls, token } = message as AgentsGo;
    agents = benchAgents({ ...config, urls, token, labels: { pool: "bench" }, logger, start });
    for (const agent of agents) {
      agent.stopped.catch((error) => console.error(`agent failed: ${error}`));
      agent.start();
    }
  },
  ran: () => ran,
  print: (message) => {
    const workOrderId = String(message.workOrderId);
    const release = printWaiting.get(workOrderId);
    if (release) release();
    else printReleased.add(workOrderId);
  },
  usage: () => ({ rss: process.memoryUsage().rss }),
  stop: async () => {
    await Promise.all(agents.map((agent) => agent.stop(2_000)));
    process.exit(0);
  },
});
send({ type: "ready" });
