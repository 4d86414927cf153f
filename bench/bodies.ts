// Scenario 9: bodies built to be slow to parse. Each is POSTed to one coordinator on Postgres while
// a request it answers without the database (`GET /v1/agents` with no token: 401) is sent again and
// again, each as soon as the one before was answered: the longest one waited is how long the
// coordinator could serve no one while it took that body. Peer in the same run: the same probes
// while it takes a plain bulk of 10,000 work orders.
import { Agent as HttpAgent, request } from "node:http";
import { CoordinatorProcess, get, NOOP_ORDER } from "./fleet.ts";
import { createDatabase, dropDatabase, now } from "./support.ts";

export type BodyStall = { name: string; status: number; bytes: number; longestProbeMs: number };

const MiB = 1 << 20;
const order = (metadata: string) => `{"spec":{"command":["true"]},"metadata":{"m":${metadata}}}`;
const emptyObjects = (n: number) => `[${Array(n).fill("{}").join(",")}]`;
const bulkOf = (items: string[]) => `{"workOrders":[${items.join(",")}]}`;

/** The bodies, the plain bulk first: [name, path, text]. */
export const BODIES: [string, string, () => string][] = [
  ["a plain bulk of 10,000 work orders", "/v1/work-orders/bulk", () => bulkOf(Array(10_000).fill(JSON.stringify(NOOP_ORDER)))],
  ["1 MiB of [{},…] in one work order", "/v1/work-orders", () => order(emptyObjects(340_000))],
  ["32 MiB of [{},…] in a bulk of 10,000", "/v1/work-orders/bulk", () => bulkOf(Array(10_000).fill(order(emptyObjects(1_100))))],
  ["2,097,152 pieces of [{},…] in a bulk of 10,000", "/v1/work-orders/bulk", () => bulkOf(Array(10_000).fill(order(emptyObjects(98))))],
  ["32 MiB of escaped quotes in one bulk work order", "/v1/work-orders/bulk", () => `{"workOrders":["${'\\"'.repeat(16 * MiB - 30)}"]}`],
  ["31 MiB bulk of 10,000 work orders of 3 KiB", "/v1/work-orders/bulk", () => bulkOf(Array(10_000).fill(`{"spec":{"command":["sh","-c","${"echo hello; ".repeat(270)}"]}}`))],
];

export async function bodyStalls(): Promise<BodyStall[]> {
  const url = await createDatabase("bodies");
  const coordinator = await CoordinatorProcess.start({ kind: "postgres", url });
  const agent = new HttpAgent({ keepAlive: true });
  try {
    const { url: base, ciToken } = coordinator.ready;
    await send(agent, base, ciToken, BODIES[0]![1], Buffer.from(BODIES[0]![2]())); // warm-up: connections, JIT
    const stalls: BodyStall[] = [];
    for (const [name, path, text] of BODIES) {
      const body = Buffer.from(text());
      let sending = true;
      let longest = 0;
      const probing = (async () => {
        while (sending) {
          const start = now();
          await get(agent, `${base}/v1/agents`);
          longest = Math.max(longest, now() - start);
        }
      })();
      const status = await send(agent, base, ciToken, path, body);
      sending = false;
      await probing;
      stalls.push({ name, status, bytes: body.length, longestProbeMs: longest });
    }
    return stalls;
  } finally {
    agent.destroy();
    await coordinator.stop();
    await dropDatabase(url);
  }
}

function send(agent: HttpAgent, base: string, token: string, path: string, body: Buffer): Promise<number> {
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json", "content-length": body.length };
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { method: "POST", agent, headers }, (response) => {
      response.resume();
      response.on("end", () => resolve(response.statusCode!));
    });
    // A refused body may be answered before it is all sent: the answer still comes after an EPIPE;
    // a reset (the server stopped draining) is told as status 0.
    req.on("error", (error) => {
      const { code } = error as NodeJS.ErrnoException;
      if (code === "ECONNRESET") resolve(0);
      else if (code !== "EPIPE") reject(error);
    });
    req.on("socket", (socket) => socket.on("error", () => {}));
    req.end(body);
  });
}
