// One agent's WebSocket connection: hello and authentication, then claims, heartbeats and job
// messages. Claims are bounded by the agent's capacity and prefetch (./holdings.ts). Job messages
// are applied one at a time, in order, and each is acknowledged by sequence number. A flooding
// agent is slowed by pausing its socket (TCP back-pressure), never by dropping; so is every agent
// while the completer is congested, until it has caught up.
import { setTimeout as sleep } from "node:timers/promises";
import type WebSocket from "ws";
import { describeIssues } from "../../protocol/issues.ts";
import { MAX_MESSAGE_PIECES, PROTOCOL_VERSION } from "../../protocol/limits.ts";
import { TurnCork } from "../../protocol/turn-cork.ts";
import {
  type AgentMessage,
  agentMessage,
  type Assignment,
  type CoordinatorMessage,
  type JobMessage,
  NOT_APPLIED,
} from "../../protocol/messages.ts";
import { type Principal, Throttled, type TokenVerifier } from "../auth/tokens.ts";
import type { Bus } from "../bus.ts";
import type { Database } from "../db/database.ts";
import { isUnavailable } from "../db/unavailable.ts";
import { boundPieces, TooComplex } from "../json-scan.ts";
import type { Claimer, Dispatcher } from "../dispatch/dispatcher.ts";
import { agentActiveJobs, agentConnect, agentDisconnect } from "../sql/agent-session.ts";
import type { Completer } from "../completer.ts";
import type { Applied } from "../sql/job-apply.ts";
import type { Claimant } from "../sql/work-order-claim.ts";
import { Holdings } from "./holdings.ts";
import { TokenBucket } from "../rate/token-bucket.ts";

export type SessionContext = {
  db: Database;
  bus: Bus;
  verifier: TokenVerifier;
  dispatcher: Dispatcher;
  completer: Completer;
  heartbeatSeconds: number;
  /** How long an agent's jobs stay its own after it disconnects (or stops being heard). */
  leaseSeconds: number;
  /**
   * How long acknowledgements wait for another message to ride with: most often the agent's next
   * assignment, which its `job.finished` set in motion. Each write to a socket is a system call, on
   * loopback the costliest thing a busy coordinator does; an agent keeps what is unacknowledged a
   * little longer, and loses nothing by it.
   */
  ackDelayMs: number;
  /**
   * Bytes written to an agent and not yet taken by it past which it is cut off: one that stops
   * reading must not make the coordinator hold what is sent to it without end.
   */
  maxBufferedBytes: number;
  /** Called once a hello's token is let in: the client no longer counts against its address's sockets before a hello. */
  admitted(session: AgentSession): void;
  /** Called once the agent is known; returns a function that forgets it. */
  register(session: AgentSession): () => void;
  /** Sessions written to whose socket may still hold bytes unread: the hub's watchdog checks them. */
  unflushed: Set<AgentSession>;
  /** Jobs with a finish on its way to the database, across the process's sessions: how many finishes. */
  finishing: Map<string, number>;
  /** Closes the agent's current session, if it has one here, so that it reconnects. */
  resync(agentId: string): void;
  log(event: string, fields: Record<string, unknown>): void;
};

const HELLO_TIMEOUT_MS = 10_000;
/**
 * The most a frame may be before a hello: a hello with 64 labels of the longest keys and values is
 * under 30 KiB, and a client with no token is not parsed a megabyte at a time.
 */
export const MAX_HELLO_BYTES = 64 * 1024;
/** How long a closing socket has to answer the close before it is cut: none holds a descriptor for long. */
const CLOSE_GRACE_MS = 2_000;
/** Job messages waiting to be applied before the socket is paused. */
const MAX_QUEUED = 256;

export const CloseCode = {
  /** The WebSocket code for "try again later": the agent redials and resends what is unacknowledged. */
  unavailable: 1013,
  protocol: 4000,
  unauthenticated: 4001,
  replaced: 4002,
  silent: 4003,
  shutdown: 4004,
  /** The name is another good token's: the agent redials, and gets in once that token is revoked. */
  nameTaken: 4005,
} as const;

/**
 * Whether a lease last set at `leaseFrom` has gone most of a heartbeat unrenewed. An agent out of
 * touch stops its jobs a full lease less a heartbeat after the last word it heard, trusting that its
 * lease was renewed within a heartbeat before that word: past this, it hears no more from here.
 */
export function leaseOverdue(leaseFrom: number, heartbeatSeconds: number, now = Date.now()): boolean {
  return now - leaseFrom > heartbeatSeconds * 800;
}

/**
 * Seconds after a session's registration, or its renewal, by which its coordinator will have renewed
 * it again, as the other replicas read it: renewals run twice a heartbeat, and a session that
 * cannot be renewed for 0.8 of one is closed where it is held (`leaseOverdue`). Past it, a session
 * never renewed is taken for a registration that landed after its socket closed.
 */
export const renewalDue = (heartbeatSeconds: number) => heartbeatSeconds * 1.5;

export class AgentSession implements Claimer {
  claimant!: Claimant;
  /** The token its hello was let in with: once revoked, the hub closes the session. */
  tokenId?: string;
  private holdings!: Holdings;
  /** The jobs the database lists as the agent's at the welcome are in `holdings`. */
  private listed = false;
  /** A hello came: until then the client has shown no sign of being an agent. */
  private greeted = false;
  /** When the lease of the name's previous holder ran out, as it stood at this session's registration (`Date.now()`). */
  private heldUntil = 0;
  lastSeen = Date.now();
  /** When the lease the database holds for this agent was last set, at the latest (this process's clock). */
  leaseFrom = 0;
  private unregister?: () => void;
  private queue: Promise<void> = Promise.resolve();
  private queued = 0;
  private paused = false;
  private readonly bucket: TokenBucket;
  private readonly helloTimer: NodeJS.Timeout;
  private readonly cork = new TurnCork();
  /** Acknowledgements not sent yet, highest seq per job. */
  private readonly acks = new Map<string, number>();
  private ackTimer?: NodeJS.Timeout;

  constructor(
    readonly sessionId: string,
    private readonly socket: WebSocket,
    /** The peer's, charged for failed hellos. */
    private readonly address: string | undefined,
    private readonly ctx: SessionContext,
  ) {
    this.bucket = new TokenBucket({ perSecond: 1000, burst: 2000 });
    this.helloTimer = setTimeout(() => this.close(CloseCode.protocol, "no hello"), HELLO_TIMEOUT_MS);
    socket.on("message", (data, isBinary) => this.receive(data as Buffer, isBinary));
    // The agent's heartbeat is a WebSocket ping (answered by ws), or an unsolicited pong when it needs no answer.
    const beat = () => (this.lastSeen = Date.now());
    socket.on("ping", beat);
    socket.on("pong", beat);
    socket.on("close", () => this.closed());
    socket.on("error", (error) => ctx.log("agent socket error", { session: sessionId, error: error.message }));
  }

  get agentId(): string | undefined {
    return this.claimant?.agentId;
  }

  /** Sends `message`, after the acknowledgements waiting, in one write. */
  send(message: CoordinatorMessage): void {
    this.flushAcks();
    this.write(message);
  }

  private write(message: CoordinatorMessage): void {
    if (!this.open) return;
    // Only what earlier turns left unread counts: one turn's writes (a claim round's assignments) may
    // pass the limit by themselves for an agent that reads.
    if (!this.cork.holding) {
      if (this.cutIfNotReading()) return;
      this.ctx.unflushed.add(this);
    }
    this.cork.hold(this.socket);
    this.socket.send(JSON.stringify(message));
  }

  /**
   * Cuts off an agent that left more than the limit unread (checked before a turn's first write, and
   * by the hub's watchdog: an agent that sends nothing is written to only now and then).
   */
  cutIfNotReading(): boolean {
    if (this.socket.bufferedAmount <= this.ctx.maxBufferedBytes) return false;
    this.ctx.log("agent not reading; cut off", { session: this.sessionId, agent: this.claimant?.name, buffered: this.socket.bufferedAmount });
    this.socket.terminate();
    return true;
  }

  /** Whether the socket holds nothing unsent (the kernel took it all). */
  get flushed(): boolean {
    return this.socket.bufferedAmount === 0;
  }

  assign(jobs: Assignment[]): void {
    if (!this.open) return this.handBack(jobs);
    this.holdings.assigned(jobs.map((job) => job.jobId));
    for (const job of jobs) this.send({ type: "assign", job });
  }

  /**
   * Jobs dealt to this session after its socket went (a claim round in flight as it closed) never
   * reached the agent, which may be connected anew elsewhere and renewing its lease: they go back
   * to the queue as the agent would give them back, unbegun.
   */
  private handBack(jobs: Assignment[]): void {
    for (const { jobId } of jobs) {
      this.apply({ type: "job.finished", jobId, seq: 1, outcome: "returned", exitCode: null, error: "dealt to a connection that had closed" });
    }
  }

  /**
   * Whether this session was given the job (or listed it at its welcome), and the agent has not
   * said it finished; any job, until the welcome's list has been read.
   */
  holds(jobId: string): boolean {
    return !this.listed || this.holdings.holds(jobId);
  }

  /** The agent may since have reconnected: its current session is the one to close. */
  resync(): void {
    this.ctx.log("claim unanswered; agent told to reconnect", { session: this.sessionId, agent: this.claimant.name });
    this.ctx.resync(this.claimant.agentId);
  }

  close(code: number, reason: string): void {
    // No more work for it: a replaced or silent socket may take a while to finish closing.
    if (this.claimant) this.ctx.dispatcher.remove(this);
    // What it has been told was applied, so that it need not send it again.
    this.flushAcks();
    this.socket.close(code, reason);
    setTimeout(() => this.socket.terminate(), CLOSE_GRACE_MS).unref();
  }

  /**
   * Acknowledgements are cumulative, so of a job's messages answered while its acknowledgement
   * waits (one batch holds a short job's starting, started and finished) only the highest goes out.
   */
  private ack(jobId: string, seq: number): void {
    this.ackTimer ??= setTimeout(() => this.flushAcks(), this.ctx.ackDelayMs);
    this.acks.set(jobId, Math.max(seq, this.acks.get(jobId) ?? 0));
  }

  private flushAcks(): void {
    if (this.acks.size === 0) return;
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    for (const [jobId, seq] of this.acks) this.write({ type: "ack", jobId, seq });
    this.acks.clear();
  }

  private error(code: string, message: string, extra: { jobId?: string; fatal?: boolean } = {}): void {
    this.ctx.log("agent message rejected", { session: this.sessionId, agent: this.claimant?.name, code, message });
    this.send({ type: "error", code, message, fatal: false, ...extra });
  }

  private receive(data: Buffer, isBinary: boolean): void {
    this.throttle();
    // Until its hello is let in, not just sent: a hello with any token must not open the door to large frames.
    if (!this.claimant && data.length > MAX_HELLO_BYTES) return this.refuse("hello_too_large", `a hello takes at most ${MAX_HELLO_BYTES} bytes`);
    let parsed: unknown;
    if (isBinary) return this.invalid("invalid_json", "message is not JSON text: binary frames are not part of the protocol");
    try {
      const text = data.toString("utf8");
      boundPieces(text, MAX_MESSAGE_PIECES);
      parsed = JSON.parse(text);
    } catch (error) {
      if (error instanceof TooComplex) return this.invalid("message_too_large", `a message holds ${error.message}`);
      // Not V8's message, which quotes the text, and the rejection is logged: a hello's text holds its token.
      const at = /at position (\d+)/.exec((error as Error).message);
      return this.invalid("invalid_json", `message is not JSON text${at ? ` (at position ${at[1]})` : ""}`);
    }
    const result = agentMessage.safeParse(parsed);
    if (!result.success) return this.invalid("invalid_message", describeIssues(result.error).message);
    this.dispatch(result.data);
  }

  /** A bad message: after a hello, refused alone; before one, the client is no agent of ours. */
  private invalid(code: string, message: string): void {
    return this.greeted ? this.error(code, message) : this.refuse(code, message);
  }

  /** Refuses a client that spoke out of turn before its hello, and closes its socket. */
  private refuse(code: string, message: string): void {
    this.error(code, message, { fatal: true });
    this.close(CloseCode.protocol, "hello expected");
  }

  private throttle(): void {
    const wait = Math.max(this.bucket.take(), this.queued >= MAX_QUEUED ? 50 : 0);
    if (this.paused) return;
    if (wait > 0) this.pauseUntil(sleep(wait, undefined, { ref: false }));
    else if (this.ctx.completer.congested) this.pauseUntil(this.ctx.completer.relieved());
  }

  private pauseUntil(resume: Promise<unknown>): void {
    this.paused = true;
    this.socket.pause();
    void resume.then(() => {
      this.paused = false;
      this.socket.resume();
    });
  }

  private dispatch(message: AgentMessage): void {
    this.lastSeen = Date.now();
    if (message.type === "hello") {
      // Received is enough: under a connect storm the answer may wait on the database a while.
      clearTimeout(this.helloTimer);
      this.greeted = true;
      return void this.enqueue(() => this.hello(message));
    }
    if (!this.greeted) return this.refuse("no_hello", "send hello first");
    if (!this.claimant) return this.error("no_hello", "send hello first");
    switch (message.type) {
      case "claim":
        return void this.enqueue(async () => this.claim(this.holdings.claim(message.slots)));
      case "drain":
        // Withdrawn at once: a finish read with it must not grant owed slots to a draining agent.
        this.holdings.drain();
        return void this.enqueue(async () => this.ctx.dispatcher.remove(this));
      case "heartbeat":
        return;
      default:
        return this.jobMessage(message);
    }
  }

  private enqueue(work: () => Promise<void>): Promise<void> {
    this.queued++;
    this.queue = this.queue
      .then(work)
      .catch((error) => this.failed(error))
      .finally(() => this.queued--);
    return this.queue;
  }

  /**
   * `jobId`: the message was one of the job's, which the agent keeps and sends again later. A hello
   * not answered with a welcome would leave the agent waiting on an open socket for good: it
   * reconnects instead, on its backoff, and says hello again.
   */
  private failed(error: unknown, jobId?: string): void {
    this.ctx.log("agent message failed", { session: this.sessionId, job: jobId, error: String(error) });
    if (isUnavailable(error)) return this.close(CloseCode.unavailable, "database unavailable; reconnect later");
    if (jobId) return this.error(NOT_APPLIED, `job ${jobId}: the database refused the message; send it again later`, { jobId });
    if (!this.listed) return this.close(CloseCode.unavailable, "the agent could not be registered; reconnect later");
    this.send({ type: "error", code: "internal", message: "the coordinator could not apply a message", fatal: false });
  }

  private async hello(message: Extract<AgentMessage, { type: "hello" }>): Promise<void> {
    if (this.claimant) return this.error("duplicate_hello", "hello was already received");
    clearTimeout(this.helloTimer);
    if (message.protocol !== PROTOCOL_VERSION) {
      this.error("protocol_version", `this coordinator speaks protocol ${PROTOCOL_VERSION}, not ${message.protocol}`, { fatal: true });
      return this.close(CloseCode.protocol, "protocol version");
    }
    let principal: Principal | undefined;
    try {
      principal = await this.ctx.verifier.verify(message.token, this.address);
    } catch (error) {
      if (!(error instanceof Throttled)) throw error;
      this.error("rate_limited", `${error.message}; try again in ${Math.ceil(error.waitMs / 1000)} s`);
      return this.close(CloseCode.unavailable, "too many failed authentications");
    }
    if (!principal || (principal.role !== "agent" && principal.role !== "admin")) {
      this.error("unauthenticated", "the token is not a valid agent token", { fatal: true });
      return this.close(CloseCode.unauthenticated, "unauthenticated");
    }
    this.ctx.admitted(this);
    if (!this.open) return;
    this.tokenId = principal.tokenId;
    const { name, labels, capacity, prefetch, mode, version } = message;
    const leaseFrom = Date.now();
    const registered = await agentConnect(this.ctx.db, { name, labels, capacity, prefetch, mode, version, tokenId: principal.tokenId }, this.sessionId, this.ctx.leaseSeconds, renewalDue(this.ctx.heartbeatSeconds));
    if (registered === undefined) {
      this.error("name_taken", `the name ${name} was let in with another token, which is still good: revoke that one first, or take another name`);
      return this.close(CloseCode.nameTaken, "the name is another token's");
    }
    // Gone while it was registered: `closed()` found no agent to let go of, so it is let go here,
    // never registered with the hub (whose lease renewals would keep its jobs its own for good).
    const agentId = registered.id;
    if (!this.open) return this.disconnect(agentId, name);
    this.claimant = { agentId, name, labels, queueMode: mode === "queue" };
    this.heldUntil = Date.now() + registered.heldSeconds * 1000;
    this.leaseFrom = leaseFrom;
    this.holdings = new Holdings(capacity + prefetch);
    this.lastSeen = Date.now();
    this.unregister = this.ctx.register(this);
    const jobs = await agentActiveJobs(this.ctx.db, agentId);
    // A database that stalled the registration may have let the lease it set run out: the agent
    // must not be welcomed to begin jobs on it (the rule the hub holds registered sessions to).
    if (leaseOverdue(this.leaseFrom, this.ctx.heartbeatSeconds)) {
      return this.close(CloseCode.unavailable, "the lease could not be set in time; reconnect later");
    }
    this.holdings.welcome(jobs.map((job) => job.jobId));
    this.listed = true;
    this.send({
      type: "welcome",
      agentId,
      heartbeatSeconds: this.ctx.heartbeatSeconds,
      leaseSeconds: this.ctx.leaseSeconds,
      jobs: jobs.map(({ jobId, seq }) => ({ jobId, seq })),
    });
    for (const job of jobs) if (job.cancelReason) this.send({ type: "cancel", jobId: job.jobId, reason: job.cancelReason });
    this.ctx.log("agent connected", { agent: name, session: this.sessionId, capacity, mode, labels });
  }

  private claim(slots: number): void {
    // A closing socket still delivers what the agent sent before it heard: that must not put it back among the claimants.
    if (slots > 0 && this.open) this.ctx.dispatcher.claim(this, slots);
  }

  /**
   * A message of one of its jobs. A finish frees its slot (./holdings.ts) as it is read or once it is
   * applied; a job that runs on after all (the finish out of sequence, a repeat of another message's
   * number, refused by the state machine or by the database) is the agent's until it ends, or a
   * finish sent again and again would free slots without end.
   */
  private jobMessage(message: JobMessage): void {
    const { jobId } = message;
    const finishing = message.type === "job.finished" && this.holdings.finishing(jobId);
    // Counted at once, ahead of any claim still in the session's queue: either order grants the same.
    const grant = (owed: number) => owed > 0 && void this.enqueue(async () => this.claim(owed));
    if (finishing) grant(this.holdings.finished(jobId));
    this.apply(message, finishing ? (ended) => grant(this.holdings.settled(jobId, ended)) : () => {});
  }

  /**
   * A job the agent disowns may still run on the name's previous holder, cut off from its
   * coordinator rather than gone (nothing tells the two apart): it is not run again before that
   * holder's lease ends, by which its fence has stopped it.
   */
  private holdFor(message: JobMessage): number {
    const disowned = message.type === "job.finished" && message.outcome === "lost";
    return disowned ? Math.max(0, (this.heldUntil - Date.now()) / 1000) : 0;
  }

  /** Job messages go to the completer, which batches them; answers come back in order. */
  private apply(message: JobMessage, settled: (ended: boolean) => void = () => {}): void {
    this.queued++;
    const finish = message.type === "job.finished" ? count(this.ctx.finishing, message.jobId) : () => {};
    this.ctx.completer
      .apply(this.claimant.agentId, message, this.holdFor(message))
      .then((result) => {
        settled(!runsOn(result));
        this.answer(message, result);
      })
      .catch((error) => {
        settled(false);
        this.failed(error, message.jobId);
      })
      .finally(() => {
        this.queued--;
        finish();
      });
  }

  private answer(message: JobMessage, result: Applied): void {
    const { jobId, seq } = message;
    switch (result.kind) {
      case "applied":
        this.ack(jobId, seq);
        if (result.requeued) this.ctx.bus.emit("enqueued", [result.requeued]);
        return this.ctx.bus.emit("changed", result.workOrderId);
      case "duplicate":
        return this.ack(jobId, seq);
      case "rejected":
        this.ack(jobId, seq);
        return this.error("illegal_transition", result.reason, { jobId });
      case "gap":
        return this.error("sequence_gap", `job ${jobId}: expected seq ${result.expected}, got ${seq}`, { jobId });
      case "unknown":
        return this.error("unknown_job", `job ${jobId} is not assigned to this agent`, { jobId });
    }
  }

  private get open(): boolean {
    return this.socket.readyState === this.socket.OPEN;
  }

  private closed(): void {
    clearTimeout(this.helloTimer);
    clearTimeout(this.ackTimer);
    if (!this.claimant) return;
    this.ctx.dispatcher.remove(this);
    this.unregister?.();
    this.disconnect(this.claimant.agentId, this.claimant.name);
  }

  private disconnect(agentId: string, name: string): void {
    void agentDisconnect(this.ctx.db, agentId, this.sessionId, this.ctx.leaseSeconds).catch((error) =>
      this.ctx.log("agent disconnect not recorded", { agent: name, error: String(error) }),
    );
    this.ctx.log("agent disconnected", { agent: name, session: this.sessionId });
  }
}

/** Counts one more of `key` in `counts`; returns the function that counts it off again. */
function count(counts: Map<string, number>, key: string): () => void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
  return () => {
    const left = counts.get(key)! - 1;
    if (left === 0) counts.delete(key);
    else counts.set(key, left);
  };
}

/** Whether the job a message is about runs on after its answer: not when applied or unknown here; a gap says nothing of it, so it does. */
function runsOn(result: Applied): boolean {
  return result.kind === "gap" || ((result.kind === "duplicate" || result.kind === "rejected") && !result.ended);
}
