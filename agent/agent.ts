// The agent: connects, declares its labels and capacity, claims work when it has free slots, runs
// each job through its adapter and streams what happens back. With `prefetch` it also holds that
// many jobs ahead, queued to begin the moment a slot frees, so no slot waits on a round trip to the
// coordinator. On a lost connection it redials and resends whatever the coordinator has not
// acknowledged; on drain it stops claiming, returns the jobs it only held, and finishes the rest.
import { tmpdir } from "node:os";
import type { Logger } from "pino";
import { PROTOCOL_VERSION } from "../protocol/limits.ts";
import { type AgentMode, type Assignment, type CoordinatorMessage, NOT_APPLIED } from "../protocol/messages.ts";
import type { Labels } from "../protocol/selector.ts";
import { Connection } from "./connection.ts";
import { adapterFor } from "../adapters/registry.ts";
import { type AdapterLookup, JobRunner } from "./job-runner.ts";
import { Outbox } from "./outbox.ts";
import { Resends } from "./resends.ts";

export type AgentOptions = {
  /** ws://host:port/v1/agent of each coordinator; the agent moves to the next when one is lost. */
  urls: string[];
  /**
   * The token, or where to read it at each dial (a token file): a token refused at a dial or
   * revoked later is then read again, and if it has changed the agent dials with the new one.
   */
  token: string | (() => string);
  name: string;
  labels: Labels;
  capacity: number;
  /** Jobs held beyond `capacity`, queued to begin as slots free (default 0). */
  prefetch?: number;
  mode: AgentMode;
  version: string;
  cancelGraceMs: number;
  logger: Logger;
  /** Bytes of output a job's log may take; the rest is dropped, after a line that says so (default: no limit). */
  maxLogBytes?: number;
  /** Where jobs find their adapter by name (the built-in ones unless given). */
  adapters?: AdapterLookup;
  /** Unacknowledged messages kept in memory before the rest go to a spill file (default 64 MiB). */
  outboxMemoryBytes?: number;
  /** How often the agent pings a coordinator that has not welcomed it yet (default 10 s; one a beat unanswered, it dials the next). */
  welcomeBeatMs?: number;
};

/** Close codes after which redialling cannot help. */
const FATAL_CLOSE = new Map([
  [4000, "the coordinator refused the protocol"],
  [4001, "the coordinator refused the token"],
  [4002, "another agent connected with the same name"],
]);

/** The coordinator's close when the name was let in with another token still good (a rotation under way, or an impostor). */
const NAME_TAKEN = 4005;

/** How long a refused agent waits for its stopped jobs to end before it gives up on them. */
const FATAL_STOP_MS = 5_000;

/** How long past the cancel grace a drain waits for the jobs it handed back to end. */
const HAND_BACK_MARGIN_MS = 5_000;
/** How long past its jobs' end a drain waits at least for the coordinator to acknowledge their reports. */
const SETTLE_MS = 5_000;

/** Redials to mend gaps come no more often than this; a gap sooner sets one for when it has passed. */
const GAP_REDIAL_MS = 30_000;

/** Error codes by which the coordinator refuses a job's message because the job is not this agent's (any more). */
const NOT_OURS = new Set(["illegal_transition", "unknown_job"]);

export class AgentFailed extends Error {}

/** The coordinator's terms, from its welcome. */
type Lease = { seconds: number; heartbeatSeconds: number };

export class Agent {
  /** Every job the agent holds, begun or queued. */
  private readonly runners = new Map<string, JobRunner>();
  /** Held jobs not begun yet, highest priority first, then oldest work order. */
  private queued: JobRunner[] = [];
  private begun = 0;
  private readonly connection: Connection;
  private readonly outbox: Outbox;
  private readonly resends: Resends;
  private readonly log: Logger;
  private draining = false;
  /** When the agent last dialled again to learn where a gap's job stands (`Date.now()`). */
  private redialedForGap = 0;
  /** A redial put off to the end of the 30 s since the last one. */
  private gapRedial?: NodeJS.Timeout;
  private welcomed = false;
  /** Set while out of touch: when it fires, the coordinator is about to give our jobs away. */
  private fence?: NodeJS.Timeout;
  private watchdog?: NodeJS.Timeout;
  private lease?: Lease;
  /** The token of the last hello, and of the last welcome. */
  private token = "";
  private welcomedToken?: string;
  /**
   * Dial with this rather than the token source's: the name is still held by the token it was
   * last let in with, which is still good (a rotation, the new token written, the old not yet revoked).
   */
  private dialWith?: string;
  /** What the coordinator said as it refused this connection for good, which its close reason only sums up. */
  private refusal?: string;
  private fail!: (error: AgentFailed) => void;
  /** Rejects when the agent cannot go on (bad token, duplicate name); resolves after `stop`. */
  readonly stopped: Promise<void>;
  private finish!: () => void;

  constructor(private readonly options: AgentOptions) {
    this.log = options.logger.child({ agent: options.name });
    this.outbox = new Outbox((text) => this.connection.sendText(text), {
      memoryBytes: options.outboxMemoryBytes ?? 64 * 1024 * 1024,
      spillDir: tmpdir(),
      ready: () => this.welcomed && !this.connection.congested,
      warn: (message, fields) => this.log.warn(fields, message),
    });
    this.resends = new Resends(this.outbox);
    this.connection = new Connection(options.urls, {
      open: () => this.hello(),
      message: (message) => this.receive(message),
      close: (code, reason) => this.disconnected(code, reason),
      drained: () => this.outbox.pump(),
      warn: (message, fields) => this.log.warn(fields ?? {}, message),
    }, options.welcomeBeatMs);
    this.stopped = new Promise((resolve, reject) => {
      this.finish = resolve;
      this.fail = reject;
    });
  }

  start(): void {
    this.connection.start();
  }

  /**
   * Stops claiming, lets running jobs finish for up to `timeoutMs`, cancels what is left, waits
   * (briefly) for the coordinator to acknowledge every report, then disconnects.
   */
  async stop(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    if (!this.draining) {
      this.draining = true;
      this.connection.send({ type: "drain" });
      this.connection.urgent();
      this.resends.urgent();
      this.log.info({ running: this.begun, returning: this.queued.length, timeoutMs }, "draining");
      for (const runner of this.queued) runner.handBack();
    }
    const jobs = this.jobsEnded();
    if (!(await within(jobs, timeoutMs))) {
      this.log.warn({ running: this.runners.size }, "drain timed out; handing back the jobs left");
      for (const runner of this.runners.values()) runner.handBack();
      // A run its adapter cannot end (a system that never answers) is left to the coordinator, which
      // finds it lost once the lease runs out, and its process group goes with the agent.
      if (!(await within(jobs, this.options.cancelGraceMs + HAND_BACK_MARGIN_MS))) {
        this.log.error({ running: [...this.runners.keys()] }, "jobs did not end after their cancel grace; leaving them to the coordinator");
      }
    }
    // The jobs' reports are waited for until the drain's deadline, at least a few seconds past their
    // end: a coordinator away meanwhile (its database restarting) is still told how they ended.
    await within(this.outbox.settled(), Math.max(deadline - Date.now(), SETTLE_MS));
    this.resends.stop();
    clearTimeout(this.gapRedial);
    clearTimeout(this.fence);
    clearInterval(this.watchdog);
    await this.connection.stop();
    this.outbox.close();
    this.finish();
  }

  private hello(): void {
    const { name, labels, capacity, prefetch = 0, mode, version } = this.options;
    this.welcomed = false;
    this.refusal = undefined;
    this.token = this.dialWith ?? this.currentToken();
    this.connection.send({ type: "hello", protocol: PROTOCOL_VERSION, token: this.token, name, labels, capacity, prefetch, mode, version });
  }

  private currentToken(): string {
    const { token } = this.options;
    return typeof token === "string" ? token : token();
  }

  private receive(message: CoordinatorMessage): void {
    switch (message.type) {
      case "welcome":
        return this.welcome(message);
      case "assign":
        return this.assign(message.job);
      case "cancel":
        this.log.info({ job: message.jobId, reason: message.reason }, "cancel requested");
        return this.runners.get(message.jobId)?.cancel();
      case "ack":
        this.outbox.ack(message.jobId, message.seq);
        return this.resends.answered(message.jobId);
      case "error":
        this.log.warn({ code: message.code, job: message.jobId }, message.message);
        if (message.fatal) this.refusal = message.message;
        if (message.code === "sequence_gap" && message.jobId) this.gap(message.jobId);
        if (message.code === NOT_APPLIED && message.jobId) this.resends.later(message.jobId);
        if (NOT_OURS.has(message.code) && message.jobId) this.notOurs(message.jobId, message.code);
    }
  }

  /**
   * A gap after a refusal waits for the refused message's resend. Any other means the coordinator
   * expects a message before those it acknowledged (its database lost commits): only a welcome says
   * from where, so the agent dials again, and its welcome tells the coordinator what it lost.
   */
  private gap(jobId: string): void {
    if (this.resends.waiting(jobId)) return;
    // A coordinator that gaps whatever it is told would otherwise have the agent redial without end.
    const wait = this.redialedForGap + GAP_REDIAL_MS - Date.now();
    if (wait > 0) {
      this.gapRedial ??= setTimeout(() => this.redialForGap(jobId), wait);
      this.gapRedial.unref();
      return;
    }
    this.redialForGap(jobId);
  }

  private redialForGap(jobId: string): void {
    clearTimeout(this.gapRedial);
    this.gapRedial = undefined;
    this.redialedForGap = Date.now();
    this.log.warn({ job: jobId }, "the coordinator expects a message it had acknowledged; reconnecting to tell it again");
    this.connection.drop();
  }

  /**
   * The coordinator no longer counts the job as ours (its lease ran out, or it was given up):
   * another attempt may run it, so this one stops at once. A job it does not know at all (its
   * database lost it) will never have a message taken: once nothing runs it, its stream goes, or
   * it would be sent again after every reconnect.
   */
  private notOurs(jobId: string, code: string): void {
    const runner = this.runners.get(jobId);
    runner?.handBack(0);
    if (code !== "unknown_job" || runner) return;
    this.outbox.forget(jobId);
    this.resends.answered(jobId);
  }

  private welcome(message: Extract<CoordinatorMessage, { type: "welcome" }>): void {
    this.welcomed = true;
    this.welcomedToken = this.token;
    clearTimeout(this.fence);
    this.lease = { seconds: message.leaseSeconds, heartbeatSeconds: message.heartbeatSeconds };
    this.connection.established(beatInterval(message.heartbeatSeconds, message.leaseSeconds), () => this.runners.size > 0);
    this.watch(message.leaseSeconds);
    for (const { jobId, seq } of message.jobs) {
      if (!this.outbox.resume(jobId, seq) && !this.runners.has(jobId)) this.disown(jobId, seq);
    }
    const ours = new Set(message.jobs.map((j) => j.jobId));
    for (const [jobId, runner] of this.runners) {
      if (ours.has(jobId)) continue;
      // Given up, it may be running elsewhere already: stopped at once, not after the cancel grace.
      this.log.warn({ job: jobId }, "the coordinator gave this job up while we were away; stopping it");
      runner.handBack(0);
    }
    clearTimeout(this.gapRedial);
    this.gapRedial = undefined;
    this.resends.reset();
    this.outbox.resend();
    this.log.info({ agentId: message.agentId, running: this.begun, held: this.queued.length }, "connected");
    if (this.draining) this.connection.send({ type: "drain" });
    else this.claim(this.options.capacity + (this.options.prefetch ?? 0) - this.runners.size);
    this.beginQueued();
  }

  /**
   * Out of touch for half the lease, stop every job: past the lease the coordinator declares them
   * lost and may run them elsewhere, and two runs of one work order must never overlap. Counted
   * from the last word from the coordinator, not from noticing the loss. A coordinator speaks to an
   * agent only while its lease was renewed within a heartbeat, so the last renewal may be that much
   * older than the word: the lease can run out a heartbeat short of a full lease after it, and the
   * jobs' cancel grace is cut to end by then.
   */
  private armFence(lease: Lease): void {
    clearTimeout(this.fence);
    // Taken now: what is heard while redialling (a socket opening, a refused hello) renews no lease.
    const lastWord = Date.now() - this.connection.silentForMs;
    this.fence = setTimeout(() => {
      if (this.welcomed || this.runners.size === 0) return;
      const graceMs = Math.max(0, lease.seconds * 1000 - lease.heartbeatSeconds * 1000 - (Date.now() - lastWord));
      this.log.warn({ running: this.runners.size, graceMs }, "out of touch with the coordinator for half the lease; stopping all jobs");
      for (const runner of this.runners.values()) runner.handBack(graceMs);
    }, Math.max(0, lease.seconds * 500 - this.connection.silentForMs));
    this.fence.unref();
  }

  /**
   * A coordinator that vanished without closing the socket (its host died, the network split) is
   * noticed by silence: past half the lease with jobs running, the socket is cut and the fence falls.
   */
  private watch(leaseSeconds: number): void {
    clearInterval(this.watchdog);
    this.watchdog = setInterval(() => {
      if (!this.welcomed || this.runners.size === 0 || this.connection.silentForMs < leaseSeconds * 500) return;
      this.log.warn({ silentMs: this.connection.silentForMs }, "no word from the coordinator for half the lease; dropping the connection");
      this.connection.drop();
    }, Math.min(1000, leaseSeconds * 125));
    this.watchdog.unref();
  }

  /** The coordinator thinks we hold a job we do not (we restarted): it is lost, and retried by its policy. */
  private disown(jobId: string, seq: number): void {
    this.outbox.open(jobId, seq);
    this.outbox.push({
      type: "job.finished",
      jobId,
      outcome: "lost",
      exitCode: null,
      error: "the agent no longer holds this job (it restarted, or never received it)",
      infrastructure: false,
    });
  }

  private claim(slots: number): void {
    if (slots > 0 && this.welcomed && !this.draining) this.connection.send({ type: "claim", slots });
  }

  private assign(job: Assignment): void {
    if (this.runners.has(job.jobId)) return;
    this.log.info({ job: job.jobId, workOrder: job.workOrderId, attempt: job.attempt }, "job assigned");
    this.outbox.open(job.jobId);
    // Past its timeout by a lease, the reaper ends the job and may retry it: by then it must be gone.
    const timeoutGraceMs = this.lease && Math.min(this.options.cancelGraceMs, (this.lease.seconds - this.lease.heartbeatSeconds) * 1000);
    const runner = new JobRunner(job, (body) => this.outbox.push(body), this.options.adapters ?? adapterFor, {
      cancelGraceMs: this.options.cancelGraceMs,
      timeoutGraceMs,
      maxLogBytes: this.options.maxLogBytes,
      warn: (message, fields) => this.log.warn(fields, message),
    });
    this.runners.set(job.jobId, runner);
    this.hold(runner);
    // Assigned as the drain crossed it: the claim is withdrawn, so it goes straight back.
    if (this.draining) runner.handBack();
    void runner.done.then((ending) => {
      this.runners.delete(job.jobId);
      if (runner.begun) this.begun--;
      else this.queued = this.queued.filter((r) => r !== runner);
      this.log.info({ job: job.jobId, ...ending }, "job finished");
      this.claim(1);
      this.beginQueued();
    });
    this.beginQueued();
  }

  /** Begins held jobs while slots are free; only while in touch, since a job may begin only where its claim is known to hold. */
  private beginQueued(): void {
    while (this.queued.length > 0 && this.welcomed && !this.draining && this.begun < this.options.capacity) {
      if (this.queued.shift()!.begin()) this.begun++;
    }
  }

  private hold(runner: JobRunner): void {
    const at = this.queued.findIndex((held) => before(runner.job, held.job));
    this.queued.splice(at === -1 ? this.queued.length : at, 0, runner);
  }

  /** Settles once every job held now has ended. */
  private jobsEnded(): Promise<unknown> {
    return Promise.all([...this.runners.values()].map((runner) => runner.done));
  }

  private disconnected(code: number, reason: string): void {
    if (this.welcomed && this.lease !== undefined && this.runners.size > 0) this.armFence(this.lease);
    this.welcomed = false;
    if (code === NAME_TAKEN) {
      // Its old token, if it has one that differs, holds the name: back to it (at once, since the
      // jobs it runs count the time away) until it is revoked.
      if (this.welcomedToken !== undefined && this.welcomedToken !== this.token) {
        this.dialWith = this.welcomedToken;
        this.connection.hurry();
      }
      this.log.warn({ code, reason }, "the name is held by another token that is still good; redialling until it is revoked");
    }
    if (code === 4001) this.dialWith = undefined;
    const fatal = FATAL_CLOSE.get(code);
    if (!fatal) return;
    // A rotation: the new token was put in place before the old one was revoked.
    if (code === 4001 && this.currentToken() !== this.token) return this.log.warn({ code, reason }, "token refused; dialling again with the new one");
    this.log.error({ code, reason }, fatal);
    clearTimeout(this.fence);
    clearInterval(this.watchdog);
    this.resends.stop();
    void this.connection.stop();
    // Never to be reported, and perhaps already given to another (an agent that took this one's
    // name disowns them): its jobs are stopped at once, and end before the agent does.
    for (const runner of this.runners.values()) runner.handBack(0);
    void within(this.jobsEnded(), FATAL_STOP_MS).then(() => {
      this.outbox.close();
      this.fail(new AgentFailed(`${fatal}: ${this.refusal ?? reason}`));
    });
  }
}

/** Whether `a` begins before `b`: the order the claim picks work orders in. */
function before(a: Assignment, b: Assignment): boolean {
  return a.priority !== b.priority ? a.priority > b.priority : BigInt(a.workOrderId) < BigInt(b.workOrderId);
}

async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Beats every heartbeat, or more often where the lease is short, so that a coordinator answering
 * in time is never silent for half the lease while jobs run.
 */
function beatInterval(heartbeatSeconds: number, leaseSeconds: number): number {
  return Math.max(250, Math.min(heartbeatSeconds * 1000, leaseSeconds * 500 - 1000));
}
