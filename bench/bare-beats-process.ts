// Child entry for scenario 5's peer: heartbeats on bare WebSockets, no coordinator. As `server`, a
// ws server that notes when each socket was last heard (as a session does), and nothing else; it
// sends `ready {url}`. As `clients`, `count` sockets to `url`, at most `inFlight` opening at a time,
// each beating as an idle agent does (every `beatMs`, a ping every `IDLE_PINGS`th beat, an
// unsolicited pong otherwise), starting at a random point of its first period; `status` answers
// how many are open. What the server costs for those beats is the floor of what the coordinator
// can cost for its idle agents' on the same machine.
import type { AddressInfo } from "node:net";
import WebSocket, { WebSocketServer } from "ws";
import { IDLE_PINGS } from "../agent/connection.ts";
import { childConfig, send, serve } from "./support.ts";

export type BareBeatsConfig = { role: "server" } | { role: "clients"; url: string; count: number; beatMs: number; inFlight: number };
export type BareBeatsReady = { type: "ready"; url?: string };

const config = childConfig<BareBeatsConfig>();

async function server(): Promise<string> {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve, reject) => wss.once("listening", resolve).once("error", reject));
  const heard = new WeakMap<WebSocket, number>();
  wss.on("connection", (socket) => {
    const beat = () => heard.set(socket, Date.now());
    beat();
    socket.on("ping", beat);
    socket.on("pong", beat);
  });
  return `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
}

function clients(url: string, count: number, beatMs: number, inFlight: number): () => number {
  let open = 0;
  let dialled = 0;
  const dial = () => {
    while (dialled < count && dialled - open < inFlight) {
      dialled++;
      const socket = new WebSocket(url);
      socket.on("open", () => {
        open++;
        let beats = 0;
        const beat = () => (++beats % IDLE_PINGS === 0 ? socket.ping() : socket.pong());
        setTimeout(() => setInterval(beat, beatMs), Math.random() * beatMs);
        dial();
      });
      socket.on("error", (error) => console.error(`bare beats: ${error.message}`));
    }
  };
  dial();
  return () => open;
}

const url = config.role === "server" ? await server() : undefined;
const open = config.role === "clients" ? clients(config.url, config.count, config.beatMs, config.inFlight) : () => 0;
serve({ status: () => open(), stop: () => process.exit(0) });
send({ type: "ready", url } satisfies BareBeatsReady);
