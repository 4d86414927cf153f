// The coordinator as one service: database, HTTP API and agent WebSocket endpoint on one port.
// `start` resolves once it listens; `stop` is idempotent.
import type { AddressInfo } from "node:net";
import { createServer, type Server } from "node:http";
import { getRequestListener, RequestError } from "@hono/node-server";
import type { Logger } from "pino";
import { TokenVerifier } from "./auth/tokens.ts";
import { Bus, EVERY_QUEUE } from "./bus.ts";
import { Completer } from "./completer.ts";
import { type Database, type DatabaseConfig, openDatabase } from "./db/database.ts";
import { afterUncertainCommits } from "./db/uncertain-commits.ts";
import { Dispatcher } from "./dispatch/dispatcher.ts";
import { RateLimits } from "./rate/rate-limits.ts";
import type { Rate } from "./rate/token-bucket.ts";
import { Reaper } from "./reaper.ts";
import { Relay } from "./relay/relay.ts";
import { Statistics } from "./statistics.ts";
import { Vacuum, type VacuumOptions, vacuumNeeded } from "./vacuum.ts";
import { createApp } from "./http/app.ts";
import { errorLogger } from "./loggable.ts";
import { DEFAULT_MAX_FOLLOWERS, Followers } from "./logs/followers.ts";
import { AGENT_PATH, Hub } from "./ws/hub.ts";
import { MAX_LEASE_SECONDS, MIN_BEAT_SECONDS } from "../protocol/limits.ts";

export type CoordinatorOptions = {
  database: DatabaseConfig;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  heartbeatSeconds?: number;
  /** How long a disconnected agent's jobs stay its own (default 30 s); at least twice the heartbeat. */
  leaseSeconds?: number;
  /** Log followers served at once (default 5,000); more are answered 503 with `Retry-After`. */
  maxFollowers?: number;
  /** Requests a second each token may make, in bursts of ten seconds' worth (default 100); 0: no limit. */
  requestsPerSecond?: number;
  /** Failed authentications a client address may make, over HTTP and WebSocket together (default: 30, then 1 a second). */
  authFailures?: Rate;
  /** How long an acknowledgement to an agent waits for another message to ride with (default 50 ms). */
  ackDelayMs?: number;
  /** Bytes sent to an agent and not yet read by it past which it is cut off (default 64 MiB). */
  maxAgentBufferedBytes?: number;
  /** Sockets one client address may hold open before their hello (default 1,024); one more is answered 503 with `Retry-After`. */
  maxAwaitingHello?: number;
  /** Days an ended work order (with its jobs and logs), or an agent unseen, is kept (default 30); 0 keeps them. */
  retainDays?: number;
  /** When the coordinator vacuums its tables, where nothing else does (PGlite, or a server with autovacuum off); false: never. */
  vacuum?: Partial<VacuumOptions> | false;
  logger: Logger;
};

export type Coordinator = {
  db: Database;
  /** http://host:port */
  url: string;
  /** ws://host:port/v1/agent */
  agentUrl: string;
  stop(): Promise<void>;
};

export async function startCoordinator(options: CoordinatorOptions): Promise<Coordinator> {
  const { logger } = options;
  const heartbeatSeconds = options.heartbeatSeconds ?? 10;
  const leaseSeconds = options.leaseSeconds ?? 30;
  if (leaseSeconds < 2 * heartbeatSeconds) throw new RangeError("the lease must be at least twice the heartbeat interval");
  if (heartbeatSeconds < MIN_BEAT_SECONDS || leaseSeconds > MAX_LEASE_SECONDS) {
    throw new RangeError(`the heartbeat must be at least ${MIN_BEAT_SECONDS} s and the lease at most ${MAX_LEASE_SECONDS} s`);
  }
  const retainDays = options.retainDays ?? DEFAULT_RETAIN_DAYS;
  if (!Number.isInteger(retainDays) || retainDays < 0 || retainDays > MAX_RETAIN_DAYS) {
    throw new RangeError(`the retention must be a whole number of days from 0 to ${MAX_RETAIN_DAYS}`);
  }
  // What a write lost at its commit may have made claimable was never announced: the groups look
  // again, here and, told as a wake-up for every queue, on the other replicas.
  const db = afterUncertainCommits(await openDatabase(options.database), () => {
    dispatcher.sweep();
    bus.publish?.("enqueued", [[EVERY_QUEUE]]);
  });
  const bus = new Bus();
  const verifier = new TokenVerifier(db, { failures: new RateLimits(options.authFailures ?? { perSecond: 1, burst: 30 }) });
  const onError = errorLogger(logger);
  const dispatcher = new Dispatcher(db, bus, onError);
  const completer = new Completer(db);
  const statistics = new Statistics(db, bus, onError);
  const relay = db.listener && new Relay(bus, db.listener, () => dispatcher.sweep(), onError);
  const closing = new AbortController();
  const followers = new Followers(options.maxFollowers ?? DEFAULT_MAX_FOLLOWERS);
  const requestsPerSecond = options.requestsPerSecond ?? DEFAULT_REQUESTS_PER_SECOND;
  // Bursts of ten seconds' worth.
  const requestRate = requestsPerSecond > 0 ? new RateLimits({ perSecond: requestsPerSecond, burst: requestsPerSecond * 10 }) : undefined;
  const app = createApp({ db, bus, verifier, followers, dispatcher, requestRate, closing: closing.signal }, onError);
  let server: Server;
  let vacuum: Vacuum | undefined;
  try {
    if (options.vacuum !== false && (await vacuumNeeded(db))) vacuum = new Vacuum(db, bus, onError, options.vacuum);
    await relay?.start();
    server = await listen(app.fetch, options.host ?? "127.0.0.1", options.port ?? 7700);
  } catch (error) {
    await relay?.stop();
    await statistics.stop();
    await vacuum?.stop();
    await db.close();
    throw error;
  }
  // Started once it listens: a coordinator that cannot serve must not reap.
  const hub = new Hub({
    db,
    bus,
    verifier,
    dispatcher,
    completer,
    heartbeatSeconds,
    leaseSeconds,
    ackDelayMs: options.ackDelayMs ?? 50,
    maxBufferedBytes: options.maxAgentBufferedBytes ?? 64 * 1024 * 1024,
    maxAwaitingHello: options.maxAwaitingHello ?? 1024,
    log: (event, fields) => logger.info(fields, event),
  });
  hub.attach(server);
  const reaper = new Reaper(db, bus, { intervalMs: Math.min(1000, leaseSeconds * 100), leaseSeconds, retainDays, onError });
  reaper.start();

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      const closed = drainServer(server);
      closing.abort();
      await hub.stop();
      await reaper.stop();
      // Requests still answering may enqueue or cancel: their wake-ups must still reach other replicas.
      await closed;
      await completer.drain();
      await relay?.stop();
      dispatcher.stop();
      await statistics.stop();
      await vacuum?.stop();
      await db.close();
    })());
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(":") ? `[${address}]` : address;
  logger.info({ url: `http://${host}:${port}`, database: options.database.kind }, "coordinator listening");
  return { db, url: `http://${host}:${port}`, agentUrl: `ws://${host}:${port}${AGENT_PATH}`, stop };
}

export const DEFAULT_REQUESTS_PER_SECOND = 100;
export const DEFAULT_RETAIN_DAYS = 30;
export const MAX_RETAIN_DAYS = 36_500;

/** How long requests in flight at a stop (an enqueue whose insert may have committed) get to answer. */
const DRAIN_MS = 5000;

/** Stops accepting, closes connections as they fall idle, and cuts what is still busy after DRAIN_MS. */
async function drainServer(server: Server): Promise<void> {
  const closed = new Promise((resolve) => server.close(resolve));
  const idle = setInterval(() => server.closeIdleConnections(), 50);
  const cut = setTimeout(() => server.closeAllConnections(), DRAIN_MS);
  try {
    await closed;
  } finally {
    clearInterval(idle);
    clearTimeout(cut);
  }
}

/**
 * The answer to a request the adapter could not turn into one (a Host header it cannot read): the
 * API's error, not an empty 400. One without a Host at all (HTTP/1.0, as load balancers' health
 * checks send) is taken as for `localhost`.
 */
function unreadable(error: unknown): Response {
  // Anything else came out of the app itself, which answers its own errors: never the client's fault.
  if (!(error instanceof RequestError)) return Response.json({ error: { code: "internal", message: "internal error" } }, { status: 500 });
  const message = `the request's Host header or target cannot be read (${error.message})`;
  return Response.json({ error: { code: "invalid_request", message, ...(/host/i.test(error.message) && { field: "Host" }) } }, { status: 400 });
}

/**
 * How long an idle client connection is kept: past the 60 s idle timeout of common load balancers,
 * so that one never sends a request on a connection this end is closing. A busy coordinator takes
 * in one new connection a turn of its event loop (libuv's rule since 1.45): a client whose
 * connections it kept skips that queue. Node's default is 5 s.
 */
const KEEP_ALIVE_MS = 65_000;

/** Room for a whole fleet redialling at once: Node's default accept queue (511) drops most of it. */
const LISTEN_BACKLOG = 4096;

function listen(fetch: (request: Request) => Response | Promise<Response>, host: string, port: number) {
  return new Promise<Server>((resolve, reject) => {
    const server = createServer({ keepAliveTimeout: KEEP_ALIVE_MS }, getRequestListener(fetch, { hostname: "localhost", errorHandler: unreadable }));
    server.once("listening", () => resolve(server));
    server.once("error", reject);
    server.listen({ host, port, backlog: LISTEN_BACKLOG });
  });
}
