// The agent's WebSocket to the coordinator: dials, redials with backoff and jitter after any
// loss (to the next coordinator, when it knows several), and beats so that the coordinator knows
// it is there and a silent coordinator is noticed. It knows the wire, not the jobs.
import WebSocket from "ws";
import { MAX_MESSAGE_BYTES } from "../protocol/limits.ts";
import { TurnCork } from "../protocol/turn-cork.ts";
import { type AgentMessage, type CoordinatorMessage, coordinatorMessage } from "../protocol/messages.ts";
import { Retry } from "./backoff.ts";

export type ConnectionEvents = {
  open(): void;
  message(message: CoordinatorMessage): void;
  /** The socket closed; `code` is the coordinator's close code, if it sent one. */
  close(code: number, reason: string): void;
  /** The socket's queue fell below `LOW_WATER_BYTES` after it was found congested. */
  drained(): void;
  warn(message: string, fields?: Record<string, unknown>): void;
};

/** An idle agent beats every this many beats of a busy one. */
export const IDLE_BEAT_TICKS = 2;
/** An idle agent asks for an answer every this many of its beats. */
export const IDLE_PINGS = 2;
/**
 * Until the welcome, a ping every this long (default): a coordinator that took the socket and then
 * froze, or whose host vanished, is left for the next once a ping goes a beat unanswered (20 s in),
 * as one slow to welcome (its database busy under a connect storm) still answers them.
 */
export const WELCOME_BEAT_MS = 10_000;
/** Bytes queued on the socket, not yet handed to the kernel, past which it is congested. */
export const HIGH_WATER_BYTES = 1024 * 1024;
const LOW_WATER_BYTES = 256 * 1024;

export class Connection {
  private socket?: WebSocket;
  private stopped = false;
  private readonly redial = new Retry(() => this.dial());
  private pinger?: NodeJS.Timeout;
  private next = 0;
  private lastHeard = 0;
  private unanswered = false;
  private awaitingDrain = false;
  /** The next redial goes at once: it is not the same try again (another token, say). */
  private hurried = false;
  private readonly cork = new TurnCork();

  constructor(
    private readonly urls: string[],
    private readonly events: ConnectionEvents,
    private readonly welcomeBeatMs = WELCOME_BEAT_MS,
  ) {}

  start(): void {
    this.dial();
  }

  /** How long since the coordinator last said anything, a pong included. */
  get silentForMs(): number {
    return Date.now() - this.lastHeard;
  }

  get open(): boolean {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  /** Whether the socket holds more than it should take on; if so, `drained` follows once it has emptied. */
  get congested(): boolean {
    const congested = this.open && this.socket!.bufferedAmount > HIGH_WATER_BYTES;
    if (congested) this.awaitingDrain = true;
    return congested;
  }

  send(message: AgentMessage): void {
    this.sendText(JSON.stringify(message));
  }

  /** Sends a message already serialised (the outbox keeps job messages as their JSON text). */
  sendText(text: string): void {
    if (!this.open) return;
    this.cork.hold(this.socket!);
    this.socket!.send(text, this.written);
  }

  private readonly written = (): void => {
    if (!this.awaitingDrain || !this.open || this.socket!.bufferedAmount > LOW_WATER_BYTES) return;
    this.awaitingDrain = false;
    this.events.drained();
  };

  /**
   * The coordinator accepted us: later losses start their backoff afresh. Beats every `beatMs`
   * while `wantAnswer` (jobs running: their fence counts from the last word heard), each beat a
   * ping the coordinator must answer. Idle, every `IDLE_BEAT_TICKS`th `beatMs`, well within the
   * three heartbeats after which the coordinator closes a silent agent: an idle fleet's beats were
   * most of the coordinator's CPU. Every `IDLE_PINGS`th of those is a ping, so a vanished
   * coordinator is still noticed; the others are unsolicited pongs, the one-way heartbeat of RFC
   * 6455 (5.5.3), which cost the coordinator a read, not a read and a write. A ping that has heard
   * nothing back (a pong or any message) by the next ping cuts the socket.
   */
  established(beatMs: number, wantAnswer: () => boolean): void {
    this.redial.backoff.reset();
    this.beat(beatMs, wantAnswer);
  }

  private beat(beatMs: number, wantAnswer: () => boolean): void {
    clearInterval(this.pinger);
    this.unanswered = false;
    let ticks = 0;
    let beats = 0;
    this.pinger = setInterval(() => {
      if (!wantAnswer()) {
        if (++ticks % IDLE_BEAT_TICKS !== 0) return;
        if (++beats % IDLE_PINGS !== 0) return this.socket?.pong();
      }
      if (this.unanswered) return this.socket?.terminate();
      this.unanswered = true;
      this.socket?.ping();
    }, beatMs);
  }

  /**
   * From now on redials within `URGENT_MS`, the one pending too: a drain has reports to deliver
   * before its deadline, and an outage may have stretched the backoff to half a minute.
   */
  urgent(): void {
    this.redial.urgent();
  }

  /** After this loss, redials at once rather than after a backoff step. */
  hurry(): void {
    this.hurried = true;
  }

  /** Cuts the socket at once (it redials as after any loss). */
  drop(): void {
    this.socket?.terminate();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.redial.cancel();
    clearInterval(this.pinger);
    const socket = this.socket;
    if (!socket || socket.readyState === WebSocket.CLOSED) return;
    const closed = new Promise((resolve) => socket.once("close", resolve));
    socket.close(1000, "agent stopping");
    const timer = setTimeout(() => socket.terminate(), 2_000);
    await closed;
    clearTimeout(timer);
  }

  private dial(): void {
    const url = this.urls[this.next++ % this.urls.length]!;
    const socket = new WebSocket(url, { maxPayload: MAX_MESSAGE_BYTES, handshakeTimeout: 10_000 });
    this.socket = socket;
    socket.on("open", () => {
      this.lastHeard = Date.now();
      this.beat(this.welcomeBeatMs, () => true);
      this.events.open();
    });
    socket.on("pong", () => {
      this.unanswered = false;
      this.lastHeard = Date.now();
    });
    socket.on("message", (data) => {
      // A coordinator that reads slowly answers a ping queued behind all the agent sent before it,
      // maybe past the next beat; that it says anything shows it is there.
      this.unanswered = false;
      this.lastHeard = Date.now();
      this.receive(data.toString());
    });
    socket.on("error", (error) => this.events.warn("connection error", { error: error.message }));
    socket.on("close", (code, reason) => {
      clearInterval(this.pinger);
      this.events.close(code, reason.toString());
      if (this.stopped) return;
      const delay = this.redial.schedule(this.hurried ? 0 : undefined);
      this.hurried = false;
      this.events.warn("disconnected; redialling", { url, code, delayMs: Math.round(delay) });
    });
  }

  private receive(text: string): void {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return this.events.warn("coordinator sent a message that is not JSON");
    }
    const parsed = coordinatorMessage.safeParse(json);
    if (!parsed.success) return this.events.warn("coordinator sent an unknown message", { type: (json as { type?: unknown })?.type });
    this.events.message(parsed.data);
  }
}
