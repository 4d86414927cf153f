// `jobfleet enqueue` and `jobfleet run`: build a work order from flags and a command line, enqueue
// it, and (run) follow its log live and exit as the job did.
import type { ParseArgsConfig } from "node:util";
import type { LogEvent, WorkOrderView } from "../../protocol/api.ts";
import type { JobState, WorkOrderState } from "../../protocol/states.ts";
import { randomUUID } from "node:crypto";
import { setTimeout } from "node:timers/promises";
import { Backoff } from "../../agent/backoff.ts";
import { Client, Interrupted } from "../client.ts";
import { CliError } from "../errors.ts";
import { endpoint, type Flags } from "../settings.ts";

export const workOrderOptions = {
  selector: { type: "string", short: "s" },
  agent: { type: "string" },
  label: { type: "string", short: "l", multiple: true },
  priority: { type: "string" },
  timeout: { type: "string" },
  "max-attempts": { type: "string" },
  "retry-on": { type: "string" },
  "retry-backoff": { type: "string" },
  "queue-timeout": { type: "string" },
  "idempotency-key": { type: "string" },
  env: { type: "string", short: "e", multiple: true },
  cwd: { type: "string" },
  script: { type: "string" },
  shell: { type: "string" },
  metadata: { type: "string", multiple: true },
  adapter: { type: "string" },
  spec: { type: "string" },
  json: { type: "boolean" },
  url: { type: "string" },
  token: { type: "string" },
} satisfies ParseArgsConfig["options"];

/** Exit codes of `run` for endings that have no exit code of the job's own. */
export const RUN_EXIT = { timed_out: 124, failed: 125, cancelled: 130 } as const;

/** Each KEY=VALUE as typed, the last of a repeated key kept; `__proto__` too, as an own key the coordinator judges. */
function pairs(values: string[] | undefined, flag: string): Record<string, string> {
  const out = new Map<string, string>();
  for (const pair of values ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw CliError.usage(`--${flag} takes KEY=VALUE, not '${pair}'`);
    out.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return Object.fromEntries(out);
}

const DURATION = /^(\d+)(s|m|h)?$/;

function seconds(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const match = DURATION.exec(text);
  if (!match) throw CliError.usage(`--${flag} takes a duration like 90, 90s, 15m or 2h, not '${text}'`);
  return Number(match[1]) * { s: 1, m: 60, h: 3600 }[(match[2] ?? "s") as "s" | "m" | "h"];
}

function number(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  // Not Number() alone: it reads '' as 0 and takes 0x10 or 1e2.
  if (!/^-?[0-9]+$/.test(text)) throw CliError.usage(`--${flag} takes a whole number, not '${text}'`);
  return Number(text);
}

function spec(flags: Flags, command: string[]): unknown {
  if (typeof flags.spec === "string") {
    if (command.length > 0 || flags.script) throw CliError.usage("give --spec, or a command, not both");
    try {
      return JSON.parse(flags.spec);
    } catch {
      throw CliError.usage("--spec must be JSON");
    }
  }
  const env = pairs(flags.env as string[] | undefined, "env");
  const cwd = flags.cwd as string | undefined;
  if (typeof flags.script === "string") {
    if (command.length > 0) throw CliError.usage("give --script, or a command after --, not both");
    return { script: flags.script, shell: flags.shell, env, cwd };
  }
  if (flags.shell !== undefined) throw CliError.usage("--shell goes with --script");
  if (command.length === 0) throw CliError.usage("give the command to run after --, or --script");
  return { command, env, cwd };
}

/**
 * The work-order body the flags describe; the coordinator validates it (and names what is wrong).
 * Without `--idempotency-key` it carries one made here, so that `submit` may send it again.
 */
export function workOrderBody(flags: Flags, command: string[]): Record<string, unknown> {
  return {
    adapter: flags.adapter,
    spec: spec(flags, command),
    selector: flags.selector,
    agent: flags.agent,
    labels: pairs(flags.label as string[] | undefined, "label"),
    priority: number(flags.priority as string | undefined, "priority"),
    timeoutSeconds: seconds(flags.timeout as string | undefined, "timeout"),
    maxAttempts: number(flags["max-attempts"] as string | undefined, "max-attempts"),
    retryOn: typeof flags["retry-on"] === "string" ? flags["retry-on"].split(",").map((e) => e.trim()) : undefined,
    retryBackoffSeconds: seconds(flags["retry-backoff"] as string | undefined, "retry-backoff"),
    queueTimeoutSeconds: seconds(flags["queue-timeout"] as string | undefined, "queue-timeout"),
    idempotencyKey: flags["idempotency-key"] ?? `cli-${randomUUID()}`,
    metadata: pairs(flags.metadata as string[] | undefined, "metadata"),
  };
}

export async function enqueue(flags: Flags, command: string[]): Promise<number> {
  const { url, token } = endpoint(flags);
  const order = await submit(new Client(url, token), workOrderBody(flags, command));
  process.stdout.write(flags.json ? `${JSON.stringify(order, null, 2)}\n` : `${order.id}\n`);
  return 0;
}

/** A job's own exit code where it is one a process can exit with and says it failed; else `failed`. */
export function exitCodeOf(state: WorkOrderState | JobState, exitCode: number | null): number {
  if (state === "succeeded") return 0;
  if (state === "failed") return exitCode !== null && exitCode >= 1 && exitCode <= 255 ? exitCode : RUN_EXIT.failed;
  if (state === "lost" || state === "returned") return RUN_EXIT.failed;
  if (state === "timed_out" || state === "cancelled") return RUN_EXIT[state];
  throw new CliError(`the work order is still ${state}`);
}

export async function run(flags: Flags, command: string[]): Promise<number> {
  const { url, token } = endpoint(flags);
  const client = new Client(url, token);
  const body = workOrderBody(flags, command);
  const cancel = (id: string) => {
    process.stderr.write(`jobfleet: cancelling work order ${id} (interrupt again to stop waiting)\n`);
    const request = () => client.request("POST", `/v1/work-orders/${id}/cancel`, { reason: "interrupted at the CLI" });
    retried("cancelling", FOLLOW.reconnectForMs, request).catch((error) => process.stderr.write(`jobfleet: work order ${id} not cancelled: ${(error as Error).message}\n`));
  };
  // Heard from before the enqueue: a work order enqueued as the user interrupts is cancelled, not
  // left to run unwatched.
  let order: WorkOrderView | undefined;
  let interrupted = false;
  const interrupt = () => {
    if (interrupted) process.exit(RUN_EXIT.cancelled);
    interrupted = true;
    if (order) cancel(order.id);
    else process.stderr.write("jobfleet: interrupted; the work order is cancelled once enqueued (interrupt again to stop waiting)\n");
  };
  process.on("SIGINT", interrupt).on("SIGTERM", interrupt);
  try {
    order = await submit(client, body);
    process.stderr.write(`jobfleet: work order ${order.id} enqueued (selector '${order.selector}')\n`);
    if (interrupted) cancel(order.id);
    return await follow(client, `/v1/work-orders/${order.id}/log?follow=true`, `work order ${order.id}`);
  } finally {
    process.off("SIGINT", interrupt).off("SIGTERM", interrupt);
  }
}

export type FollowOptions = {
  /** A stream silent this long is taken for lost: three of the server's 15 s keepalives missed. */
  idleMs: number;
  /** How long the coordinator may stay out of reach before `follow` gives up. */
  reconnectForMs: number;
};

const FOLLOW: FollowOptions = { idleMs: 45_000, reconnectForMs: 5 * 60_000 };

/**
 * Streams a followed log (`path`, of `subject`: "work order 7") to stdout until it ends; returns the
 * exit code for its ending. A lost stream is taken up again where it broke off (`Last-Event-ID`),
 * for as long as `reconnectForMs`.
 */
export async function follow(client: Client, path: string, subject: string, { idleMs, reconnectForMs }: FollowOptions = FOLLOW): Promise<number> {
  let lastEventId: string | undefined;
  // An outage lasts until a stream opens again; the delays (0.25-0.5 s, growing to 2.5-5 s, or a
  // longer `Retry-After` up to 60 s) start over only once an event arrives, so a server that opens
  // streams only to cut them is not asked again four times a second. Jittered, so the CI jobs
  // following one coordinator do not return in step.
  let outageSince: number | undefined;
  const backoff = new Backoff(500, 5000);
  for (;;) {
    try {
      const onOpen = () => (outageSince = undefined);
      for await (const { event, data, id } of client.events(path, { lastEventId, idleMs, onOpen })) {
        backoff.reset();
        const message = JSON.parse(data) as LogEvent;
        if (event === "log" && message.type === "log") process.stdout.write(message.data);
        else if (event === "job" && message.type === "job") process.stderr.write(`jobfleet: job ${message.jobId} (attempt ${message.attempt})\n`);
        else if (event === "end" && message.type === "end") {
          const why = message.error === undefined ? "" : `: ${message.error}`;
          process.stderr.write(`jobfleet: ${subject} ${message.state}${message.exitCode === null ? "" : ` (exit ${message.exitCode})`}${why}\n`);
          return exitCodeOf(message.state, message.exitCode);
        }
        lastEventId = id ?? lastEventId;
      }
      throw new Interrupted(`the log stream of ${subject} ended before it did`);
    } catch (error) {
      if (!(error instanceof Interrupted)) throw error;
      outageSince ??= Date.now();
      await waitOut(error, outageSince, backoff, reconnectForMs, "following");
    }
  }
}

/**
 * Enqueues `body`, trying again through an outage or a rate limit for up to `reconnectForMs`.
 * Its idempotency key makes a POST sent again after its answer was lost enqueue once.
 */
export async function submit(client: Client, body: Record<string, unknown>, { reconnectForMs }: Pick<FollowOptions, "reconnectForMs"> = FOLLOW): Promise<WorkOrderView> {
  return retried("enqueuing", reconnectForMs, () => client.request<WorkOrderView>("POST", "/v1/work-orders", body));
}

/** `attempt`, made again through an outage or a rate limit for up to `reconnectForMs`. */
async function retried<T>(doing: string, reconnectForMs: number, attempt: () => Promise<T>): Promise<T> {
  const since = Date.now();
  const backoff = new Backoff(500, 5000);
  for (;;) {
    try {
      return await attempt();
    } catch (error) {
      if (!(error instanceof Interrupted)) throw error;
      await waitOut(error, since, backoff, reconnectForMs, doing);
    }
  }
}

/** Waits to try again, never sooner than the coordinator asked; gives up once the outage is `reconnectForMs` old. */
async function waitOut(error: Interrupted, outageSince: number, backoff: Backoff, reconnectForMs: number, doing: string): Promise<void> {
  if (Date.now() - outageSince >= reconnectForMs) throw new CliError(`${error.message}; gave up after ${reconnectForMs / 1000} s`);
  const delay = Math.max(backoff.next(), error.retryAfterMs ?? 0);
  process.stderr.write(`jobfleet: ${error.message}; ${doing} again in ${(delay / 1000).toFixed(1)} s\n`);
  await setTimeout(delay);
}
