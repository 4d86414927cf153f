// How the CLI shows what the coordinator refused, and answers that break off or are not the API's:
// one line on stderr naming the flag where one set the field, exit 1, never a stack trace; and how
// a list says there is more.
import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { agentConnect } from "../../coordinator/sql/agent-session.ts";
import { workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { jobApply } from "../store/fixtures.ts";
import { useInProcessCoordinator } from "../support/in-process.ts";
import { jobfleet } from "../support/processes.ts";

describe("against a coordinator", () => {
  const fleet = useInProcessCoordinator();

  it.each<[string[], string]>([
    [["jobs", "list", "--work-order", "0"], "400: --work-order: expected a numeric id"],
    [["work-orders", "list", "--limit", "0x10"], "400: --limit: expected a whole number in decimal digits"],
    [["work-orders", "list", "--state", ""], "400: --state: "],
    [["agents", "list", "--connected", "maybe"], "400: --connected: "],
    [["enqueue", "--timeout", "200h", "--", "true"], "400: --timeout: "],
    [["enqueue", "--max-attempts", "0", "--", "true"], "400: --max-attempts: "],
    [["enqueue", "--retry-on", "failed,bogus", "--", "true"], "400: --retry-on: "],
    [["enqueue", "--queue-timeout", "0", "--", "true"], "400: --queue-timeout: "],
    [["enqueue", "--idempotency-key", "", "--", "true"], "400: --idempotency-key: "],
    [["enqueue", "--selector", "os in (linux", "--", "true"], "400: --selector: invalid selector"],
  ])("jobfleet %j names the flag", async (args, message) => {
    const exit = await jobfleet(args, { JOBFLEET_URL: fleet().coordinator.url, JOBFLEET_TOKEN: fleet().ciToken }).exited;
    expect(exit.stderr.startsWith(`jobfleet: ${message}`), exit.stderr).toBe(true);
    expect(exit.stderr.trim().split("\n")).toHaveLength(1);
    expect(exit.code).toBe(1);
  });

  it("a negative number after a flag is its value, not another flag; what follows -- is left alone", async () => {
    const env = { JOBFLEET_URL: fleet().coordinator.url, JOBFLEET_TOKEN: fleet().ciToken };
    const exit = await jobfleet(["enqueue", "--priority", "-5", "--json", "--", "echo", "--priority", "-7"], env).exited;
    expect(exit.code).toBe(0);
    expect(JSON.parse(exit.stdout)).toMatchObject({ priority: -5, spec: { command: ["echo", "--priority", "-7"] } });
    const refused = await jobfleet(["enqueue", "--priority", "-1001", "--", "true"], env).exited;
    expect(refused.stderr).toMatch(/^jobfleet: 400: --priority: /);
    expect(refused.code).toBe(1);
  });

  it("an idempotency key sent again with another command is refused, naming the work order it names", async () => {
    const env = { JOBFLEET_URL: fleet().coordinator.url, JOBFLEET_TOKEN: fleet().ciToken };
    const first = await jobfleet(["enqueue", "--idempotency-key", "cli-reuse", "--json", "--", "true"], env).exited;
    const { id } = JSON.parse(first.stdout) as { id: string };
    expect((await jobfleet(["enqueue", "--idempotency-key", "cli-reuse", "--json", "--", "true"], env).exited).code).toBe(0);
    const exit = await jobfleet(["enqueue", "--idempotency-key", "cli-reuse", "--", "false"], env).exited;
    expect(exit.stderr).toBe(`jobfleet: 422: idempotency key "cli-reuse" names work order ${id}, enqueued with a different spec\n`);
    expect(exit.code).toBe(1);
  });

  it("a list with more than its page prints the page, and on stderr the flag that reads on", async () => {
    const env = { JOBFLEET_URL: fleet().coordinator.url, JOBFLEET_TOKEN: fleet().ciToken };
    for (let i = 0; i < 3; i++) expect((await jobfleet(["enqueue", "--", "true"], env).exited).code).toBe(0);
    const exit = await jobfleet(["work-orders", "list", "--limit", "2"], env).exited;
    expect(exit.stdout.trim().split("\n")).toHaveLength(3);
    const [, next] = exit.stderr.match(/^more: --before (\d+)\n$/)!;
    const rest = await jobfleet(["work-orders", "list", "--before", next!, "--json"], env).exited;
    expect((JSON.parse(rest.stdout) as { items: unknown[] }).items.length).toBeGreaterThanOrEqual(1);
    expect(rest.stderr).toBe("");
  });

  it("tokens list pages as the other lists, reading on after the last id shown", async () => {
    const admin = (await tokenCreate(fleet().coordinator.db, "cli-admin", "admin")).token;
    const env = { JOBFLEET_URL: fleet().coordinator.url, JOBFLEET_TOKEN: admin };
    const exit = await jobfleet(["tokens", "list", "--limit", "2"], env).exited;
    const rows = exit.stdout.trim().split("\n").slice(1);
    expect(rows).toHaveLength(2);
    const [, next] = exit.stderr.match(/^more: --after (\d+)\n$/)!;
    expect(next).toBe(rows[1]!.split(/\s+/)[0]);
    const rest = await jobfleet(["tokens", "list", "--after", next!, "--json"], env).exited;
    const { items } = JSON.parse(rest.stdout) as { items: { id: string; name: string }[] };
    expect(items.map((t) => t.name)).toContain("cli-admin");
    expect(items.every((t) => Number(t.id) > Number(next))).toBe(true);
  });

  it("a list whose page holds the last items does not say there is more", async () => {
    const env = { JOBFLEET_URL: fleet().coordinator.url, JOBFLEET_TOKEN: fleet().ciToken };
    for (let i = 0; i < 2; i++) expect((await jobfleet(["enqueue", "--label", "suite=exact", "--", "true"], env).exited).code).toBe(0);
    const exit = await jobfleet(["work-orders", "list", "--labels", "suite=exact", "--limit", "2"], env).exited;
    expect(exit.stdout.trim().split("\n")).toHaveLength(3);
    expect(exit.stderr).toBe("");
  });

  it("jobs cancel of a job that has ended is refused, and its work order's next attempt left alone", async () => {
    const env = { JOBFLEET_URL: fleet().coordinator.url, JOBFLEET_TOKEN: fleet().ciToken };
    const db = fleet().coordinator.db;
    const name = "cancel-ended";
    const agentId = (await agentConnect(db, { name, labels: {}, capacity: 1, mode: "work-order", version: "test" }, `session-${name}`))!.id;
    await fleet().api("POST", "/v1/work-orders", { agent: name, maxAttempts: 2, retryOn: ["failed"], retryBackoffSeconds: 0, spec: { command: ["true"] } });
    const claim = async () => (await workOrderClaim(db, { agentId, name, labels: {}, queueMode: false }, 1))[0]!.jobId;
    const first = await claim();
    await jobApply(db, agentId, { type: "job.finished", jobId: first, seq: 1, outcome: "failed", exitCode: 1 });
    const second = await claim();
    const exit = await jobfleet(["jobs", "cancel", first], env).exited;
    expect(exit.stderr).toContain(`job ${first} has already ended (failed)`);
    expect(exit.code).toBe(1);
    expect(await db.query(`SELECT cancel_reason FROM jobs WHERE id = $1`, [second])).toEqual([{ cancel_reason: null }]);
  });
});

describe("against a server that misbehaves", () => {
  let server: Server;
  let url: string;

  beforeAll(async () => {
    server = createServer((request, response) => {
      if (request.url === "/v1/work-orders/1/log") {
        // Promises 1,000 bytes, sends a line, and drops the connection.
        response.writeHead(200, { "content-type": "text/plain", "content-length": "1000" });
        response.write("first line\n", () => setTimeout(() => response.socket?.destroy(), 50));
      } else if (request.url === "/v1/work-orders") {
        response.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ message: "no error key" }));
      } else {
        response.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ error: null }));
      }
    });
    server.listen(0, "127.0.0.1");
    await new Promise((resolve) => server.once("listening", resolve));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it("a log download cut short prints what came, then one line, exit 1", async () => {
    const exit = await jobfleet(["work-orders", "logs", "1", "--url", url, "--token", "t"]).exited;
    expect(exit.stdout).toBe("first line\n");
    expect(exit.stderr).toMatch(new RegExp(`^jobfleet: lost the connection to the coordinator at ${url} \\(.+\\)\\n$`));
    expect(exit.code).toBe(1);
  });

  it.each([
    [["work-orders", "list"]],
    [["agents", "list"]],
  ])("an error answer without the API's error object is its status (%j), exit 1", async (args) => {
    const exit = await jobfleet([...args, "--url", url, "--token", "t"]).exited;
    expect(exit.stderr).toBe("jobfleet: 400: Bad Request\n");
    expect(exit.code).toBe(1);
  });
});
