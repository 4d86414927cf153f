// All agent sockets of this coordinator process: accepts upgrades on /v1/agent, keeps one session
// per agent (a reconnecting agent replaces its stale socket), routes cancels to the socket that
// holds the job, closes silent agents, and renews the leases of the rest in one statement twice a
// heartbeat, which also finds the cancels still to be confirmed, to be sent again. It goes quiet
// towards an agent whose lease it could not renew in time, as an agent's fence assumes (below).
import { randomUUID } from "node:crypto";
import type { IncomingMessage, Server } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer } from "ws";
import { MAX_MESSAGE_BYTES } from "../../protocol/limits.ts";
import { tokensRevoked } from "../auth/tokens.ts";
import { agentsSeen, type HeldJob, type PendingCancel } from "../sql/agent-session.ts";
import { AddressSlots } from "./address-slots.ts";
import { LeaseFloor } from "./lease-floor.ts";
import { AgentSession, CloseCode, leaseOverdue, renewalDue, type SessionContext } from "./session.ts";

export const AGENT_PATH = "/v1/agent";

/** How long agents get to answer the closing handshake at shutdown. */
const CLOSE_GRACE_MS = 2000;

type HubContext = Omit<SessionContext, "register" | "resync" | "finishing" | "unflushed" | "admitted"> & {
  /** Sockets one client address may hold open before their hello; past it, an upgrade is answered 503. */
  maxAwaitingHello: number;
};

/**
 * Answers an upgrade with `status` and drops the socket once the answer is out: after an upgrade
 * request Node leaves it half open, and one whose client never closes would be held for good.
 */
function refuse(socket: Duplex, status: string): void {
  socket.once("finish", () => socket.destroy());
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\n\r\n`);
}

export class Hub {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES });
  private readonly agents = new Map<string, AgentSession>();
  private readonly sessions = new Set<AgentSession>();
  private readonly leases = new LeaseFloor();
  /** Sessions written to whose socket may still hold bytes the agent has not taken. */
  private readonly unflushed = new Set<AgentSession>();
  /**
   * `sessionId/jobId` of jobs held in the database by an agent whose session did not know them, at
   * the last renewal reconciled, and when they were first seen so.
   */
  private unknown = new Map<string, number>();
  /** When the answer of the last renewal reconciled arrived. */
  private reconciledAt = 0;
  /** Jobs with a finish on its way to the database from a session here: how many finishes. */
  private readonly finishing = new Map<string, number>();
  private readonly replica = randomUUID().slice(0, 8);
  private counter = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly watchdog: NodeJS.Timeout;
  private readonly unsubscribe: () => void;
  private readonly awaitingHello: AddressSlots;
  /** Gives back the slot of a session that has not said hello yet. */
  private readonly unwelcomed = new Map<AgentSession, () => void>();

  /** Shared by every session: a copy each held 0.5 KiB of heap an idle agent. */
  private readonly sessionContext: SessionContext;

  constructor(private readonly ctx: HubContext) {
    const { maxAwaitingHello, ...shared } = ctx;
    this.awaitingHello = new AddressSlots(maxAwaitingHello);
    this.sessionContext = {
      ...shared,
      admitted: (session) => this.unwelcomed.get(session)?.(),
      register: (session) => this.register(session),
      finishing: this.finishing,
      unflushed: this.unflushed,
      resync: (agentId) => this.agents.get(agentId)?.close(CloseCode.unavailable, "a claim went unanswered; reconnect"),
    };
    const heartbeatMs = ctx.heartbeatSeconds * 1000;
    this.timer = setInterval(() => void this.tick(), heartbeatMs / 2);
    this.watchdog = setInterval(() => this.overdue(), Math.min(1000, heartbeatMs / 10));
    this.unsubscribe = ctx.bus.on("cancel", (cancel) => this.cancel(cancel));
  }

  attach(server: Server): void {
    server.on("upgrade", (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      // Node takes its own error listener off an upgraded socket: a reset with none would throw.
      socket.on("error", () => socket.destroy());
      // Any client may send any request target: one that is no URL (`http://`) must not throw here.
      const target = request.url ?? "/";
      const path = URL.canParse(target, "http://x") ? new URL(target, "http://x").pathname : undefined;
      if (path !== AGENT_PATH) return refuse(socket, path === undefined ? "400 Bad Request" : "404 Not Found");
      const address = request.socket.remoteAddress;
      const giveBack = this.awaitingHello.take(address ?? "");
      if (!giveBack) return refuse(socket, "503 Service Unavailable\r\nRetry-After: 1");
      // Once its token is let in, or at the close, also of a failed handshake; nothing is kept after.
      let session: AgentSession | undefined;
      const release = () => {
        socket.off("close", release);
        if (session) this.unwelcomed.delete(session);
        giveBack();
      };
      socket.on("close", release);
      this.wss.handleUpgrade(request, socket, head, (ws) => {
        session = this.accept(ws, address);
        this.unwelcomed.set(session, release);
      });
    });
  }

  private accept(ws: import("ws").WebSocket, address: string | undefined): AgentSession {
    const session = new AgentSession(`${this.replica}-${++this.counter}`, ws, address, this.sessionContext);
    this.sessions.add(session);
    ws.on("close", () => {
      this.sessions.delete(session);
      this.unflushed.delete(session);
    });
    return session;
  }

  private register(session: AgentSession): () => void {
    const agentId = session.agentId!;
    this.agents.get(agentId)?.close(CloseCode.replaced, "replaced by a newer connection");
    this.agents.set(agentId, session);
    this.leases.joined(session.leaseFrom);
    return () => {
      if (this.agents.get(agentId) === session) this.agents.delete(agentId);
    };
  }

  /** Asks the agent holding the job to stop it, if that agent is connected here. */
  private cancel({ jobId, agentId, reason }: PendingCancel): void {
    this.agents.get(agentId)?.send({ type: "cancel", jobId, reason });
  }

  /** Closes silent sockets and renews the leases of every agent still connected here, in one statement. */
  private async tick(): Promise<void> {
    const started = Date.now();
    const silentBefore = started - this.ctx.heartbeatSeconds * 3000;
    // Only welcomed agents heartbeat; before that, the hello timeout and the database decide.
    for (const session of this.sessions) if (session.agentId && session.lastSeen < silentBefore) session.close(CloseCode.silent, "no heartbeat");
    const renewing = [...this.agents.values()];
    if (renewing.length === 0) return;
    const mark = this.leases.mark();
    try {
      const renewals = renewing.map((session) => ({ agentId: session.agentId!, sessionId: session.sessionId }));
      const { held, replaced } = await agentsSeen(this.ctx.db, renewals, this.ctx.leaseSeconds, renewalDue(this.ctx.heartbeatSeconds));
      for (const session of renewing) session.leaseFrom = Math.max(session.leaseFrom, started);
      this.leases.renewed(mark, started);
      for (const session of renewing) if (replaced.has(session.agentId!)) session.close(CloseCode.replaced, "replaced by a newer connection under the same name");
      for (const { jobId, agentId, cancelReason } of held) if (cancelReason !== null) this.cancel({ jobId, agentId, reason: cancelReason });
      // Renewals may overlap (one stuck on a dead connection must not hold up the leases): only one
      // begun after the last reconciled answer arrived may follow it.
      if (started >= this.reconciledAt) this.reconcile(held);
    } catch (error) {
      this.ctx.log("leases not renewed", { error: String(error) });
    }
    try {
      await this.closeRevoked(renewing);
    } catch (error) {
      this.ctx.log("revoked tokens not looked for", { error: String(error) });
    }
  }

  /**
   * Closes, for good (4001), the sessions let in with a token revoked since: a token is checked at
   * the hello, and an agent may stay connected for weeks. One statement asks after every token
   * the sessions came in with.
   */
  private async closeRevoked(sessions: AgentSession[]): Promise<void> {
    const revoked = await tokensRevoked(this.ctx.db, [...new Set(sessions.map((session) => session.tokenId!))]);
    if (revoked.size === 0) return;
    const closing = sessions.filter((session) => revoked.has(session.tokenId!));
    this.ctx.log("agent token revoked; connections closed", { agents: closing.map((session) => session.claimant.name) });
    for (const session of closing) session.close(CloseCode.unauthenticated, "the agent token was revoked");
  }

  /**
   * A session whose agent the database says holds a job that the session does not know, at two
   * renewals in a row a quarter of a heartbeat apart or more, is closed so that the agent
   * reconnects: its welcome lists the job, and the agent takes it up, tells its end again, or
   * disowns it. A claim that committed with its answer lost, here or on another replica, is so
   * settled, and so is a job whose end the database lost after it was acknowledged. One renewal
   * alone may fall between a claim's commit and its assignment; a finish on its way to the
   * database from here is not counted.
   */
  private reconcile(held: HeldJob[]): void {
    const now = Date.now();
    this.reconciledAt = now;
    const unknown = new Map<string, number>();
    for (const { jobId, agentId } of held) {
      const session = this.agents.get(agentId);
      if (!session || session.holds(jobId) || this.finishing.has(jobId)) continue;
      const key = `${session.sessionId}/${jobId}`;
      const since = this.unknown.get(key) ?? now;
      if (now - since < this.ctx.heartbeatSeconds * 250) unknown.set(key, since);
      else {
        this.ctx.log("agent holds a job it was never told of; told to reconnect", { agent: session.claimant.name, job: jobId });
        session.close(CloseCode.unavailable, "the coordinator lists a job this session does not hold; reconnect");
      }
    }
    this.unknown = unknown;
  }

  /**
   * Once a lease has gone most of a heartbeat unrenewed (the database unreachable or stuck), its
   * agent hears no more from here (`leaseOverdue`; pongs included, which need no database): its
   * socket is closed, and it redials, here or elsewhere. Renewals run twice a heartbeat, so one may
   * take 0.3 of it. Sessions are looked over only once the oldest lease may be overdue, and for
   * unread bytes only those written to since they last had none.
   */
  private overdue(): void {
    const now = Date.now();
    if (leaseOverdue(this.leases.oldest, this.ctx.heartbeatSeconds, now)) this.closeOverdue(now);
    for (const session of this.unflushed) if (session.cutIfNotReading() || session.flushed) this.unflushed.delete(session);
  }

  private closeOverdue(now: number): void {
    let oldest = Infinity;
    for (const session of this.agents.values()) {
      if (leaseOverdue(session.leaseFrom, this.ctx.heartbeatSeconds, now)) session.close(CloseCode.unavailable, "the lease could not be renewed; reconnect later");
      else oldest = Math.min(oldest, session.leaseFrom);
    }
    this.leases.reset(oldest);
  }

  /**
   * Closes every agent socket (agents redial another coordinator). A socket whose peer does not
   * finish the closing handshake in time is cut, so shutdown never waits on a silent agent.
   */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    clearInterval(this.watchdog);
    this.unsubscribe();
    for (const session of this.sessions) session.close(CloseCode.shutdown, "coordinator shutting down");
    const closed = new Promise<void>((resolve) => this.wss.close(() => resolve()));
    const cut = setTimeout(() => {
      for (const client of this.wss.clients) client.terminate();
    }, CLOSE_GRACE_MS);
    await closed;
    clearTimeout(cut);
  }
}
