// The coordinator as one service: database, HTTP API and agent WebSocket endpoint on one port.
// `start` resolves once it listens; `stop` is idempotent.
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import { serve } from "@hono/node-server";
import type { Logger } from "pino";
import { TokenVerifier } from "./auth/tokens.ts";
import { Bus } from "./bus.ts";
import { type Database, type DatabaseConfig, openDatabase } from "./db/database.ts";
import { Dispatcher } from "./dispatch/dispatcher.ts";
import { createApp } from "./http/app.ts";
import { AGENT_PATH, Hub } from "./ws/hub.ts";

export type CoordinatorOptions = {
  database: DatabaseConfig;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  heartbeatSeconds?: number;
  logger: Logger;
};

export type Coordinator = {
  db: Database;
  /** http://host:port */
  url: string;
  /** ws://host:port/v1/agent */
  agentUrl: string;
  hub: Hub;
  stop(): Promise<void>;
};

export async function startCoordinator(options: CoordinatorOptions): Promise<Coordinator> {
  const { logger } = options;
  const db = await openDatabase(options.database);
  const bus = new Bus();
  const verifier = new TokenVerifier(db);
  const onError = (error: unknown) => logger.error({ err: error }, "internal error");
  const dispatcher = new Dispatcher(db, bus, onError);
  const heartbeatSeconds = options.heartbeatSeconds ?? 10;
  const hub = new Hub({
    db,
    bus,
    verifier,
    dispatcher,
    heartbeatSeconds,
    log: (event, fields) => logger.info(fields, event),
  });
  const app = createApp({ db, bus, verifier }, onError);
  const server = await listen(app.fetch, options.host ?? "127.0.0.1", options.port ?? 7700);
  hub.attach(server);
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(":") ? `[${address}]` : address;
  logger.info({ url: `http://${host}:${port}`, database: options.database.kind }, "coordinator listening");

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      const closed = new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await hub.stop();
      dispatcher.stop();
      await closed;
      await db.close();
    })());
  return { db, url: `http://${host}:${port}`, agentUrl: `ws://${host}:${port}${AGENT_PATH}`, hub, stop };
}

function listen(fetch: (request: Request) => Response | Promise<Response>, hostname: string, port: number) {
  return new Promise<Server>((resolve, reject) => {
    const server = serve({ fetch, hostname, port }) as Server;
    server.once("listening", () => resolve(server));
    server.once("error", reject);
  });
}
