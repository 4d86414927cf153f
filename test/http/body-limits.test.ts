// Body limits through Node's HTTP server on loopback, as the coordinator serves them: a body sized
// by Content-Length is refused before it is read, a chunked body once it passes the limit, and the
// bulk endpoint takes bodies past the general limit. A body must be UTF-8, whichever way it comes.
import type { AddressInfo } from "node:net";
import { request } from "node:http";
import { createAdaptorServer } from "@hono/node-server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_BODY_BYTES, MAX_BODY_PIECES, MAX_BULK_BODY_BYTES, MAX_BULK_PIECES } from "../../protocol/limits.ts";
import { type Harness, startHarness } from "./harness.ts";

let h: Harness;
let server: ReturnType<typeof createAdaptorServer>;
let port: number;

beforeAll(async () => {
  h = await startHarness();
  server = createAdaptorServer({ fetch: h.app.fetch });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  await h.close();
});

type Sent = { status: number; body: { error?: { code: string; message: string } } & Record<string, unknown> };

/** POSTs `chunks`, with a Content-Length or (chunked: true) without one. */
function post(path: string, chunks: (string | Buffer)[], chunked: boolean): Promise<Sent> {
  const length = chunks.reduce((n, c) => n + Buffer.byteLength(c), 0);
  const headers: Record<string, string | number> = { "content-type": "application/json", authorization: `Bearer ${h.tokens.admin}` };
  if (!chunked) headers["content-length"] = length;
  return new Promise((resolve, reject) => {
    // A connection each (no keep-alive): the server closes one it refused mid-body, and a request
    // sent on it as it closes would hang up.
    const req = request({ host: "127.0.0.1", port, path, method: "POST", headers, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (text += chunk));
      res.on("end", () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
    });
    // The server may answer and close before the whole body is sent: writes still queued then fail
    // with EPIPE, on the request or, once it has its answer, on its socket alone.
    req.on("error", (error) => ((error as NodeJS.ErrnoException).code === "EPIPE" ? undefined : reject(error)));
    req.on("socket", (socket) => socket.on("error", () => {}));
    for (const chunk of chunks) req.write(chunk);
    req.end();
  });
}

const ORDER = JSON.stringify({ adapter: "exec", spec: { command: ["true"] } });

/** `text` padded with whitespace to `bytes` (no field may hold that much), cut into chunks of `chunk` bytes. */
function sized(text: string, bytes: number, chunk = 65_536): string[] {
  const padded = text + " ".repeat(bytes - text.length);
  return Array.from({ length: Math.ceil(bytes / chunk) }, (_, i) => padded.slice(i * chunk, (i + 1) * chunk));
}

it.each([false, true])("an order one byte over the limit is 413, chunked: %s", async (chunked) => {
  const { status, body } = await post("/v1/work-orders", sized(ORDER, MAX_BODY_BYTES + 1), chunked);
  expect(status).toBe(413);
  expect(body.error).toMatchObject({ code: "payload_too_large", message: expect.stringContaining(String(MAX_BODY_BYTES)) });
});

it.each([false, true])("an order of exactly the limit is taken, chunked: %s", async (chunked) => {
  expect((await post("/v1/work-orders", sized(ORDER, MAX_BODY_BYTES), chunked)).status).toBe(201);
});

it.each([false, true])("a bulk body past the general limit is taken, and past its own is 413, chunked: %s", async (chunked) => {
  const orders = Array.from({ length: 10_000 }, (_, i) => ({ spec: { command: ["echo", String(i).padStart(200, "x")] } }));
  const bulk = JSON.stringify({ workOrders: orders });
  expect(bulk.length).toBeGreaterThan(MAX_BODY_BYTES * 2);
  const taken = await post("/v1/work-orders/bulk", [bulk], chunked);
  expect(taken.status).toBe(201);
  // In frames of 1 MiB, as before: the server answers and closes while they are still being written.
  const refused = await post("/v1/work-orders/bulk", sized(bulk, MAX_BULK_BODY_BYTES + 1, 1 << 20), chunked);
  expect(refused.status).toBe(413);
  expect(refused.body.error?.message).toContain(String(MAX_BULK_BODY_BYTES));
});

it.each([false, true])("bytes that are not UTF-8 are refused, not read as U+FFFD; a character cut between chunks is read whole, chunked: %s", async (chunked) => {
  const [head, tail] = ['{"spec":{"command":["', '"]}}'];
  const { status, body } = await post("/v1/work-orders", [head, Buffer.from([0xff, 0xfe]), tail], chunked);
  expect(status).toBe(400);
  expect(body.error).toMatchObject({ code: "invalid_json", message: "body is not valid UTF-8" });
  const e = Buffer.from("é");
  const cut = await post("/v1/work-orders", [head, e.subarray(0, 1), e.subarray(1), tail], chunked);
  expect(cut.status).toBe(201);
  expect(cut.body.spec).toMatchObject({ command: ["é"] });
});

it("a bulk enqueue's orders come out in their order, each its own, however they were grouped to be parsed", async () => {
  const orders = Array.from({ length: 3_000 }, (_, i) => ({ spec: { command: ["echo", String(i)] }, priority: i % 7 }));
  const { status, body } = await post("/v1/work-orders/bulk", [JSON.stringify({ workOrders: orders })], false);
  expect(status).toBe(201);
  const ids = body.ids as string[];
  for (const i of [0, 1, 1_169, 1_170, 1_171, 2_340, 2_341, 2_999]) {
    const view = (await (await h.request(`/v1/work-orders/${ids[i]}`)).json()) as { spec: { command: string[] }; priority: number };
    expect([view.spec.command, view.priority]).toEqual([["echo", String(i)], i % 7]);
  }
});

describe("bodies are bounded in pieces (each { [ , and : outside strings) before they are parsed", () => {
  /** An order whose command holds `n` empty strings: 5 pieces and a comma between each two. */
  const commandOf = (n: number) => `{"spec":{"command":[${Array(n).fill('""').join(",")}]}}`;
  const sent = (path: string, text: string) => post(path, [text], false);

  it("an order of more pieces than a body may hold is 413; one of as many is parsed and judged", async () => {
    const over = await sent("/v1/work-orders", commandOf(MAX_BODY_PIECES - 3));
    expect(over.status).toBe(413);
    expect(over.body.error).toMatchObject({ code: "payload_too_large", message: `body holds more than ${MAX_BODY_PIECES} pieces (keys and values)` });
    const at = await sent("/v1/work-orders", commandOf(MAX_BODY_PIECES - 4));
    expect(at.status).toBe(400);
    expect(at.body.error).toMatchObject({ field: "spec.command" });
  });

  it("a bulk enqueue holds each order to a body's bound, and the whole to its own", async () => {
    const item = await sent("/v1/work-orders/bulk", `{"workOrders":[${ORDER},${commandOf(MAX_BODY_PIECES - 3)}]}`);
    expect(item.status).toBe(413);
    expect(item.body.error).toMatchObject({ field: "workOrders.1", message: `workOrders.1 holds more than ${MAX_BODY_PIECES} pieces (keys and values)` });
    const many = Math.ceil(MAX_BULK_PIECES / (MAX_BODY_PIECES - 4));
    const whole = await sent("/v1/work-orders/bulk", `{"workOrders":[${Array(many).fill(commandOf(MAX_BODY_PIECES - 4)).join(",")}]}`);
    expect(whole.status).toBe(413);
    expect(whole.body.error).toMatchObject({ message: `body holds more than ${MAX_BULK_PIECES} pieces (keys and values)` });
    // And to a body's bytes: in characters as it is read, then in bytes of UTF-8 as it is parsed.
    for (const text of ["x".repeat(MAX_BODY_BYTES), "é".repeat(MAX_BODY_BYTES / 2)]) {
      const long = await sent("/v1/work-orders/bulk", `{"workOrders":[${ORDER},{"spec":{"command":["${text}"]}}]}`);
      expect(long.status).toBe(413);
      expect(long.body.error).toMatchObject({ code: "payload_too_large", field: "workOrders.1" });
    }
    // What is not an item of the one array is held to a body's bytes, as it is parsed whole.
    const fat = `{"spec":{"command":["true"]}${" ".repeat(MAX_BODY_BYTES)}}`;
    const twice = await sent("/v1/work-orders/bulk", `{"workOrders":[],"workOrders":[${fat}]}`);
    expect(twice.status).toBe(413);
    expect(twice.body.error?.message).toBe(`body holds more than ${MAX_BODY_BYTES} characters`);
    const padded = await sent("/v1/work-orders/bulk", `{"x":"${"é".repeat(MAX_BODY_BYTES)}","workOrders":[${ORDER}]}`);
    expect(padded.status).toBe(413);
    expect(padded.body.error?.message).toBe(`body holds more than ${MAX_BODY_BYTES} characters outside workOrders`);
    const outside = await sent("/v1/work-orders/bulk", `{"workOrders":[${ORDER}],"x":{"y":${commandOf(MAX_BODY_PIECES)}}}`);
    expect(outside.status).toBe(413);
    expect(outside.body.error?.message).toBe(`body holds more than ${MAX_BODY_PIECES} pieces (keys and values) outside workOrders`);
  });

  it("a bulk enqueue's orders, parsed apart from the body, are judged as the body they came in, naming each place", async () => {
    const bulk = (items: string, rest = "") => sent("/v1/work-orders/bulk", `{"workOrders":[${items}]${rest}}`);
    const cases: [Sent, number, string, string][] = [
      [await bulk(`${ORDER},{"spec":}`), 400, "invalid_json", "workOrders.1"],
      [await bulk(`${ORDER},`), 400, "invalid_json", "workOrders.1"],
      [await bulk(`${ORDER} ${ORDER}`), 400, "invalid_json", "workOrders.0"],
      [await bulk(" "), 400, "invalid_request", "workOrders"],
      [await bulk(`${ORDER},{"spec":{"command":["\\u0000"]}}`), 400, "invalid_request", "workOrders.1.spec.command.0"],
      // 64 deep in the body: 60 arrays in metadata.deep, under workOrders.0.
      [await bulk(`{"spec":{"command":["true"]},"metadata":{"deep":${"[".repeat(60)}${"]".repeat(60)}}}`), 201, "", ""],
      [await bulk(`{"spec":{"command":["true"]},"metadata":{"deep":${"[".repeat(61)}${"]".repeat(61)}}}`), 400, "invalid_request", `workOrders.0.metadata.deep${".0".repeat(60)}`],
      // Not one array among the body's values: the body is read whole, and the schema names what is amiss.
      [await bulk(ORDER, ',"x":[]'), 400, "invalid_request", "x"],
      [await bulk(ORDER, ',"workOrders":5'), 400, "invalid_request", "workOrders"],
      [await bulk(ORDER, ',"x":5'), 400, "invalid_request", "x"],
      [await sent("/v1/work-orders/bulk", `[{"workOrders":[${ORDER}]}]`), 400, "invalid_request", ""],
      [await sent("/v1/work-orders/bulk", `{"workOrders":[${ORDER}]`), 400, "invalid_json", ""],
      [await sent("/v1/work-orders/bulk", `{"workOrders":[${ORDER}}}`), 400, "invalid_json", ""],
    ];
    // The first order that is wrong is named, whatever is wrong with those after it.
    cases.push(
      [await bulk(`{"spec":{"command":["\\u0000"]}},${ORDER},{"spec":}`), 400, "invalid_request", "workOrders.0.spec.command.0"],
      [await bulk(`{"spec":{}},${ORDER},{"spec":{"command":["\\u0000"]}}`), 400, "invalid_request", "workOrders.0.spec.command"],
    );
    // Past a group of items parsed together (16,384 pieces), as much as within one.
    const many = (bad: number, text: string) => Array.from({ length: 5_000 }, (_, i) => (i === bad ? text : ORDER)).join(",");
    cases.push(
      [await bulk(many(4_321, '{"spec":{"command":["\\u0000"]}}')), 400, "invalid_request", "workOrders.4321.spec.command.0"],
      [await bulk(many(4_999, '{"spec":{"command":[,]}}')), 400, "invalid_json", "workOrders.4999"],
      [await bulk(many(2_340, '{"spec":{"command":"true"}}')), 400, "invalid_request", "workOrders.2340.spec.command"],
    );
    for (const [{ status, body }, expected, code, field] of cases) {
      expect(status).toBe(expected);
      if (code) expect(body.error).toMatchObject({ code, ...(field && { field }) });
    }
  });
});
