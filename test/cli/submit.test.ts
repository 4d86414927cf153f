// `enqueue` and `run` send their work order again through an outage or a rate limit, never sooner
// than `Retry-After` asks, and always under one idempotency key, so a POST whose answer was lost
// enqueues once.
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { expect, test } from "vitest";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { startCoordinator } from "../../coordinator/coordinator.ts";
import { Client, Interrupted } from "../../cli/client.ts";
import { submit, workOrderBody } from "../../cli/commands/work.ts";
import { CliError } from "../../cli/errors.ts";

async function bodyOf(request: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>;
}

/** A server that answers the POSTs it gets with `answers` in turn, recording when and what. */
async function scripted(answers: Array<{ status: number; headers?: Record<string, string> }>) {
  const asked: Array<{ at: number; body: Record<string, unknown> }> = [];
  const server = createServer(async (request, response) => {
    asked.push({ at: Date.now(), body: await bodyOf(request) });
    const { status, headers = {} } = answers[Math.min(asked.length, answers.length) - 1]!;
    response.writeHead(status, { "content-type": "application/json", ...headers });
    response.end(JSON.stringify(status === 201 ? { id: "7", selector: "" } : { error: { code: "x", message: `status ${status}` } }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { asked, client: new Client(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, "token"), close: () => server.close() };
}

test("a 429 and a 503 are tried again, after Retry-After, with the same idempotency key", async () => {
  const server = await scripted([{ status: 429, headers: { "retry-after": "1" } }, { status: 503 }, { status: 201 }]);
  try {
    const order = await submit(server.client, workOrderBody({}, ["true"]));
    expect(order.id).toBe("7");
    expect(server.asked).toHaveLength(3);
    const keys = server.asked.map((a) => a.body.idempotencyKey);
    expect(keys[0]).toMatch(/^cli-[0-9a-f-]{36}$/);
    expect(new Set(keys).size).toBe(1);
    // Without Retry-After, the first retry comes within 0.5 s.
    expect(server.asked[1]!.at - server.asked[0]!.at).toBeGreaterThanOrEqual(990);
  } finally {
    server.close();
  }
});

test("the user's idempotency key is the one sent; a refusal is not tried again", async () => {
  const server = await scripted([{ status: 400 }]);
  try {
    const failed = await submit(server.client, workOrderBody({ "idempotency-key": "pipeline-9" }, ["true"])).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(CliError);
    expect((failed as Error).message).toBe("400: status 400");
    expect(server.asked.map((a) => a.body.idempotencyKey)).toEqual(["pipeline-9"]);
  } finally {
    server.close();
  }
});

test("an outage longer than the reconnect window is given up", async () => {
  const server = await scripted([{ status: 503, headers: { "retry-after": "0" } }]);
  try {
    const failed = await submit(server.client, workOrderBody({}, ["true"]), { reconnectForMs: 600 }).catch((e: unknown) => e);
    expect((failed as Error).message).toMatch(/^503: status 503; gave up after 0.6 s$/);
    expect(server.asked.length).toBeGreaterThanOrEqual(2);
  } finally {
    server.close();
  }
});

test("against a coordinator's rate limit, the enqueue waits its turn", async () => {
  const coordinator = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, requestsPerSecond: 1, logger: pino({ level: "silent" }) });
  try {
    const client = new Client(coordinator.url, (await tokenCreate(coordinator.db, "ci", "ci")).token);
    let refused = false;
    while (!refused) refused = await client.request("GET", "/v1/agents").then(() => false, (e: Error) => /^429: /.test(e.message));
    const order = await submit(client, workOrderBody({ selector: "os=linux" }, ["true"]));
    expect(order.state).toBe("pending");
    const admin = new Client(coordinator.url, (await tokenCreate(coordinator.db, "admin", "admin")).token);
    expect((await admin.request<{ items: unknown[] }>("GET", "/v1/work-orders")).items).toHaveLength(1);
  } finally {
    await coordinator.stop();
  }
});

test("a request that cannot even be made is no outage to wait out, and its error names no secret", async () => {
  const failed = await submit(new Client("http://user:s3cret@127.0.0.1:1", "t"), workOrderBody({}, ["true"])).catch((e: unknown) => e);
  expect(failed).toBeInstanceOf(CliError);
  expect(failed).not.toBeInstanceOf(Interrupted);
  expect((failed as Error).message).toBe("the request to the coordinator could not be made: check --url and --token");
});

// The coordinator refuses such a key with a 400 naming it (test/http/work-orders.test.ts).
test("a --label or --env pair named __proto__ is sent as typed, for the coordinator to refuse, not dropped", () => {
  const body = JSON.parse(JSON.stringify(workOrderBody({ label: ["__proto__=x", "team=web"], env: ["__proto__=1"] }, ["true"])));
  expect(Object.keys(body.labels)).toEqual(["__proto__", "team"]);
  expect(Object.keys(body.spec.env)).toEqual(["__proto__"]);
});
