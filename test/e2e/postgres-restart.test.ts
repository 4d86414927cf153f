// Postgres stops under a running job and comes back: meanwhile the API answers 503 with
// Retry-After, the agent holds its reports, and afterwards nothing is lost. On a throwaway cluster.
import { afterAll, beforeAll, expect, test } from "vitest";
import { type Cluster, startCluster } from "../support/pg-cluster.ts";
import { adminOf, Api, listening } from "../support/fleet.ts";
import { jobfleet, type JobfleetProcess } from "../support/processes.ts";
import { until } from "../support/until.ts";

let cluster: Cluster;
let coordinator: JobfleetProcess;
let agent: JobfleetProcess;
let ci: Api;

beforeAll(async () => {
  cluster = await startCluster();
  coordinator = jobfleet(["coordinator", "--listen", "127.0.0.1:0", "--heartbeat-seconds", "1", "--lease-seconds", "60"], {
    DATABASE_URL: cluster.url,
  });
  const url = await listening(coordinator);
  const admin = await adminOf(coordinator, url);
  ci = new Api(url, await admin.mintToken("ci", "ci"));
  agent = jobfleet(["agent", "--url", url, "--token", await admin.mintToken("agent", "agent"), "--name", "survivor"]);
  await agent.waitForLog("connected");
}, 60_000);

afterAll(async () => {
  await agent?.stop("SIGKILL");
  await coordinator?.stop();
  cluster?.destroy();
});

test("a Postgres restart under a running job: 503 meanwhile, and nothing lost", async () => {
  const order = await ci.enqueue({ spec: { command: ["sh", "-c", "for i in $(seq 1 60); do echo line $i; sleep 0.1; done"] } });
  await ci.follow(order.id, /line 3\n/);
  cluster.stop();

  const during = await ci.call("GET", "/v1/work-orders");
  expect(during.status).toBe(503);
  expect(during.body).toMatchObject({ error: { code: "unavailable" } });
  const response = await fetch(`${ci.url}/v1/work-orders/${order.id}`, { headers: { authorization: `Bearer ${ci.token}` } });
  expect(response.headers.get("retry-after")).toBe("2");
  await agent.waitForLog("disconnected; redialling");

  cluster.start();
  // The coordinator answers 503 until its next statement finds the database back (a client would
  // wait out the Retry-After): under load, a follow sent at once could be answered so.
  await until(async () => (await ci.call("GET", "/v1/work-orders")).status === 200, "the API back after the restart");
  const ended = await ci.follow(order.id);
  expect(ended.state).toBe("succeeded");
  expect(ended.log).toBe(Array.from({ length: 60 }, (_, i) => `line ${i + 1}\n`).join(""));
  expect((await ci.get(order.id)).attempts).toBe(1);
  const next = await ci.enqueue({ spec: { command: ["echo", "after"] } });
  expect(await ci.follow(next.id)).toMatchObject({ state: "succeeded", log: "after\n" });
});
