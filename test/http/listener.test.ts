// The coordinator's own listener, over loopback: requests its HTTP adapter cannot turn into a
// Request still get the API's answers, not an empty 400.
import { connect } from "node:net";
import { pino } from "pino";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Coordinator, startCoordinator } from "../../coordinator/coordinator.ts";

let coordinator: Coordinator;
beforeAll(async () => {
  coordinator = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, host: "127.0.0.1", port: 0, logger: pino({ level: "silent" }) });
});
afterAll(() => coordinator.stop());

/** The status line, headers and body of the answer to `request`, sent as it is (`close`: closed by us once it came). */
function raw(request: string, { close = false } = {}): Promise<{ status: string; headers: string; body: string }> {
  const { port } = new URL(coordinator.url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), "127.0.0.1", () => socket.end(request));
    let answer = "";
    socket.setEncoding("utf8").on("data", (chunk: string) => {
      answer += chunk;
      if (close && answer.includes("\r\n\r\n")) socket.destroy();
    });
    socket.on("close", () => {
      const [head = "", body = ""] = answer.split("\r\n\r\n");
      const [status = "", ...headers] = head.split("\r\n");
      resolve({ status, headers: headers.join("\n"), body });
    });
    socket.on("error", reject);
  });
}

it("answers an HTTP/1.0 request without a Host header, as load balancers' health checks send it", async () => {
  const health = await raw("GET /healthz HTTP/1.0\r\n\r\n");
  expect(health.status).toBe("HTTP/1.1 200 OK");
  expect(JSON.parse(health.body)).toEqual({ ok: true });
  const guarded = await raw("GET /v1/work-orders HTTP/1.0\r\n\r\n");
  expect(guarded.status).toBe("HTTP/1.1 401 Unauthorized");
  expect(JSON.parse(guarded.body)).toHaveProperty("error.code");
});

it("answers a Host header it cannot read with the API's JSON error", async () => {
  for (const host of ["x:99999", "a b"]) {
    const answer = await raw(`GET /healthz HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    expect(answer.status).toBe("HTTP/1.1 400 Bad Request");
    expect(answer.headers).toMatch(/content-type: application\/json/i);
    expect(JSON.parse(answer.body).error).toMatchObject({ code: "invalid_request", message: expect.stringMatching(/^the request's Host header or target cannot be read \(.+\)$/) });
  }
});

it("keeps an idle client connection past a load balancer's 60 s, and says so", async () => {
  const answer = await raw("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", { close: true });
  expect(answer.status).toBe("HTTP/1.1 200 OK");
  expect(answer.headers).toMatch(/^keep-alive: timeout=65$/im);
});
