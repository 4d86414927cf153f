import { describe, expect, it } from "vitest";
import { z } from "zod";
import { execSpec } from "../../protocol/adapter-specs.ts";
import { jobQuery, logQuery, tokenCreate, workOrderCreate, workOrderQuery } from "../../protocol/api.ts";
import { describeIssues, type FieldError } from "../../protocol/issues.ts";
import { MAX_CAPACITY, MAX_LOG_CHUNK_BYTES, MAX_PREFETCH } from "../../protocol/limits.ts";
import { agentMessage, coordinatorMessage, type AgentMessage, type CoordinatorMessage } from "../../protocol/messages.ts";

/** Parses input that must be rejected, and returns the error both sides would show. */
function rejection(schema: z.ZodType, input: unknown): FieldError {
  const result = schema.safeParse(input);
  if (result.success) throw new Error(`expected ${JSON.stringify(input)} to be rejected`);
  return describeIssues(result.error);
}

/** Asserts the rejection names `field`, and that the message leads with it. */
function expectRejected(schema: z.ZodType, input: unknown, field: string): FieldError {
  const error = rejection(schema, input);
  expect(error.field).toBe(field);
  expect(error.message.startsWith(`${field}: `)).toBe(true);
  return error;
}

const x = (n: number) => "x".repeat(n);

const agentMessages = {
  hello: {
    type: "hello",
    protocol: 1,
    token: "secret",
    name: "runner-1.eu@host:2",
    labels: { os: "linux", "example.com/gpu": "" },
    capacity: 4,
    prefetch: 2,
    version: "0.1.0",
    mode: "work-order",
  },
  claim: { type: "claim", slots: 2 },
  drain: { type: "drain" },
  heartbeat: { type: "heartbeat" },
  "job.starting": { type: "job.starting", jobId: "12", seq: 1 },
  "job.started": { type: "job.started", jobId: "12", seq: 1, externalId: "run-7", externalUrl: "https://ci.example.com/7" },
  "job.status": { type: "job.status", jobId: "12", seq: 2, status: "compiling" },
  "job.log": { type: "job.log", jobId: "12", seq: 3, data: "hello\n" },
  "job.finished": { type: "job.finished", jobId: "12", seq: 4, outcome: "failed", exitCode: 2, error: "exit status 2" },
} satisfies Record<AgentMessage["type"], AgentMessage>;

const coordinatorMessages = {
  welcome: { type: "welcome", agentId: "3", heartbeatSeconds: 15, leaseSeconds: 30, jobs: [{ jobId: "12", seq: 0 }] },
  assign: {
    type: "assign",
    job: {
      jobId: "12",
      workOrderId: "9223372036854775807",
      attempt: 1,
      priority: 0,
      adapter: "exec",
      spec: { command: ["make", "test"] },
      timeoutSeconds: null,
      adopt: null,
    },
  },
  cancel: { type: "cancel", jobId: "12", reason: "cancelled by admin" },
  ack: { type: "ack", jobId: "12", seq: 4 },
  error: { type: "error", code: "bad_message", message: "seq out of order", jobId: "12", fatal: true },
} satisfies Record<CoordinatorMessage["type"], CoordinatorMessage>;

describe("agent messages", () => {
  it.each(Object.entries(agentMessages))("accepts a valid %s", (_, message) => {
    expect(agentMessage.parse(message)).toEqual(message);
  });

  it.each(Object.entries(agentMessages))("rejects an unknown field on %s", (_, message) => {
    expect(rejection(agentMessage, { ...message, extra: 1 })).toEqual({ field: "extra", message: "extra: unknown field" });
  });

  it("fills in defaults", () => {
    const { mode: _, ...hello } = agentMessages.hello;
    expect(agentMessage.parse(hello)).toMatchObject({ mode: "queue" });
    expect(agentMessage.parse({ type: "job.finished", jobId: "1", seq: 1, outcome: "succeeded" })).toEqual({
      type: "job.finished",
      jobId: "1",
      seq: 1,
      outcome: "succeeded",
      exitCode: null,
    });
  });

  it("accepts the bounds", () => {
    const { hello, claim } = agentMessages;
    expect(agentMessage.safeParse({ ...hello, capacity: 1 }).success).toBe(true);
    expect(agentMessage.safeParse({ ...hello, capacity: MAX_CAPACITY }).success).toBe(true);
    expect(agentMessage.safeParse({ ...hello, prefetch: 0 }).success).toBe(true);
    expect(agentMessage.safeParse({ ...hello, prefetch: MAX_PREFETCH }).success).toBe(true);
    expect(agentMessage.parse({ ...hello, prefetch: undefined })).toMatchObject({ prefetch: 0 });
    expect(agentMessage.safeParse({ ...hello, name: `a${x(127)}`, token: x(512), version: x(64) }).success).toBe(true);
    // The agent's first claim, for its whole capacity and prefetch at once.
    expect(agentMessage.safeParse({ ...claim, slots: MAX_CAPACITY + MAX_PREFETCH }).success).toBe(true);
    expect(agentMessage.safeParse({ ...agentMessages["job.log"], data: x(MAX_LOG_CHUNK_BYTES) }).success).toBe(true);
    expect(agentMessage.safeParse({ ...agentMessages["job.started"], jobId: "9223372036854775807" }).success).toBe(true);
    expect(agentMessage.safeParse({ ...agentMessages["job.started"], jobId: "9223372036854775808" }).success).toBe(false);
  });

  it.each<[string, unknown, string]>([
    ["no type", { slots: 1 }, "type"],
    ["an unknown type", { type: "goodbye" }, "type"],
    ["a non-object", "hello", ""],
    ["hello: protocol as a string", { ...agentMessages.hello, protocol: "1" }, "protocol"],
    ["hello: fractional protocol", { ...agentMessages.hello, protocol: 1.5 }, "protocol"],
    ["hello: no token", { ...agentMessages.hello, token: undefined }, "token"],
    ["hello: empty token", { ...agentMessages.hello, token: "" }, "token"],
    ["hello: oversize token", { ...agentMessages.hello, token: x(513) }, "token"],
    ["hello: name starting with -", { ...agentMessages.hello, name: "-runner" }, "name"],
    ["hello: name with a space", { ...agentMessages.hello, name: "my runner" }, "name"],
    ["hello: oversize name", { ...agentMessages.hello, name: x(129) }, "name"],
    ["hello: invalid label key", { ...agentMessages.hello, labels: { "-os": "linux" } }, "labels.-os"],
    ["hello: invalid label value", { ...agentMessages.hello, labels: { os: "li nux" } }, "labels.os"],
    ["hello: label value not a string", { ...agentMessages.hello, labels: { os: 1 } }, "labels.os"],
    [
      "hello: too many labels",
      { ...agentMessages.hello, labels: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"])) },
      "labels",
    ],
    ["hello: capacity 0", { ...agentMessages.hello, capacity: 0 }, "capacity"],
    ["hello: capacity above the maximum", { ...agentMessages.hello, capacity: MAX_CAPACITY + 1 }, "capacity"],
    ["hello: negative prefetch", { ...agentMessages.hello, prefetch: -1 }, "prefetch"],
    ["hello: prefetch above the maximum", { ...agentMessages.hello, prefetch: MAX_PREFETCH + 1 }, "prefetch"],
    ["hello: fractional capacity", { ...agentMessages.hello, capacity: 1.5 }, "capacity"],
    ["hello: empty version", { ...agentMessages.hello, version: "" }, "version"],
    ["hello: oversize version", { ...agentMessages.hello, version: x(65) }, "version"],
    ["hello: a NUL in the version", { ...agentMessages.hello, version: "1.0\u0000" }, "version"],
    ["hello: a control character in the version", { ...agentMessages.hello, version: "1.0\n" }, "version"],
    ["hello: unknown mode", { ...agentMessages.hello, mode: "push" }, "mode"],
    ["claim: 0 slots", { type: "claim", slots: 0 }, "slots"],
    ["claim: too many slots", { type: "claim", slots: MAX_CAPACITY + MAX_PREFETCH + 1 }, "slots"],
    ["job.finished: an exit code past 32 bits", { type: "job.finished", jobId: "1", seq: 1, outcome: "failed", exitCode: 0xc0000005 }, "exitCode"],
    ["claim: slots as a string", { type: "claim", slots: "1" }, "slots"],
    ["job.started: id 0", { ...agentMessages["job.started"], jobId: "0" }, "jobId"],
    ["job.started: id with a leading 0", { ...agentMessages["job.started"], jobId: "012" }, "jobId"],
    ["job.started: id of 20 digits", { ...agentMessages["job.started"], jobId: "1".repeat(20) }, "jobId"],
    ["job.started: id as a number", { ...agentMessages["job.started"], jobId: 12 }, "jobId"],
    ["job.started: seq 0", { ...agentMessages["job.started"], seq: 0 }, "seq"],
    ["job.started: no seq", { ...agentMessages["job.started"], seq: undefined }, "seq"],
    ["job.started: empty externalId", { ...agentMessages["job.started"], externalId: "" }, "externalId"],
    ["job.started: oversize externalId", { ...agentMessages["job.started"], externalId: x(513) }, "externalId"],
    ["job.started: externalUrl not a URL", { ...agentMessages["job.started"], externalUrl: "ci run 7" }, "externalUrl"],
    ["job.started: a javascript: externalUrl", { ...agentMessages["job.started"], externalUrl: "javascript:alert(1)" }, "externalUrl"],
    ["job.started: a data: externalUrl", { ...agentMessages["job.started"], externalUrl: "data:text/html,x" }, "externalUrl"],
    ["job.status: a file: externalUrl", { ...agentMessages["job.status"], externalUrl: "file:///etc/passwd" }, "externalUrl"],
    [
      "job.started: oversize externalUrl",
      { ...agentMessages["job.started"], externalUrl: `https://ci.example.com/${x(2048)}` },
      "externalUrl",
    ],
    ["job.status: empty status", { ...agentMessages["job.status"], status: "" }, "status"],
    ["job.status: oversize status", { ...agentMessages["job.status"], status: x(1025) }, "status"],
    ["job.log: empty data", { ...agentMessages["job.log"], data: "" }, "data"],
    ["job.log: oversize data", { ...agentMessages["job.log"], data: x(MAX_LOG_CHUNK_BYTES + 1) }, "data"],
    ["job.finished: a non-outcome", { ...agentMessages["job.finished"], outcome: "running" }, "outcome"],
    ["job.finished: fractional exit code", { ...agentMessages["job.finished"], exitCode: 1.5 }, "exitCode"],
    ["job.finished: oversize error", { ...agentMessages["job.finished"], error: x(4097) }, "error"],
  ])("rejects %s", (_, message, field) => {
    if (field === "") {
      expect(rejection(agentMessage, message).field).toBeUndefined();
    } else {
      expectRejected(agentMessage, message, field);
    }
  });
});

describe("coordinator messages", () => {
  it.each(Object.entries(coordinatorMessages))("accepts a valid %s", (_, message) => {
    expect(coordinatorMessage.parse(message)).toEqual(message);
  });

  it.each(Object.entries(coordinatorMessages))("rejects an unknown field on %s", (_, message) => {
    expect(rejection(coordinatorMessage, { ...message, extra: 1 })).toEqual({ field: "extra", message: "extra: unknown field" });
  });

  it("fills in defaults", () => {
    expect(coordinatorMessage.parse({ type: "error", code: "x", message: "y" })).toEqual({
      type: "error",
      code: "x",
      message: "y",
      fatal: false,
    });
  });

  it("passes an assignment's spec through unvalidated, for the agent to check", () => {
    const assign = { type: "assign", job: { ...coordinatorMessages.assign.job, spec: { anything: [1] }, timeoutSeconds: 60 } };
    expect(coordinatorMessage.parse(assign)).toEqual(assign);
  });

  const { job } = coordinatorMessages.assign;
  it.each<[string, unknown, string]>([
    ["an agent message", agentMessages.heartbeat, "type"],
    ["welcome: heartbeat 0", { ...coordinatorMessages.welcome, heartbeatSeconds: 0 }, "heartbeatSeconds"],
    ["welcome: a heartbeat too short for a timer", { ...coordinatorMessages.welcome, heartbeatSeconds: 1e-300 }, "heartbeatSeconds"],
    ["welcome: a lease past a day", { ...coordinatorMessages.welcome, leaseSeconds: 1e300 }, "leaseSeconds"],
    ["welcome: negative seq", { ...coordinatorMessages.welcome, jobs: [{ jobId: "1", seq: -1 }] }, "jobs.0.seq"],
    ["welcome: bad job id", { ...coordinatorMessages.welcome, jobs: [{ jobId: "1", seq: 0 }, { jobId: "a", seq: 0 }] }, "jobs.1.jobId"],
    ["welcome: unknown field in a job", { ...coordinatorMessages.welcome, jobs: [{ jobId: "1", seq: 0, x: 1 }] }, "jobs.0.x"],
    ["assign: attempt 0", { type: "assign", job: { ...job, attempt: 0 } }, "job.attempt"],
    ["assign: unknown adapter", { type: "assign", job: { ...job, adapter: "docker" } }, "job.adapter"],
    ["assign: timeout 0", { type: "assign", job: { ...job, timeoutSeconds: 0 } }, "job.timeoutSeconds"],
    ["assign: a timeout past a week (past a timer's range at 2^31 ms)", { type: "assign", job: { ...job, timeoutSeconds: 3e6 } }, "job.timeoutSeconds"],
    ["assign: no timeout", { type: "assign", job: { ...job, timeoutSeconds: undefined } }, "job.timeoutSeconds"],
    ["assign: unknown field in the job", { type: "assign", job: { ...job, queue: "ci" } }, "job.queue"],
    ["cancel: oversize reason", { ...coordinatorMessages.cancel, reason: x(1025) }, "reason"],
    ["ack: negative seq", { ...coordinatorMessages.ack, seq: -1 }, "seq"],
    ["error: bad job id", { ...coordinatorMessages.error, jobId: "job-1" }, "jobId"],
    ["error: fatal as a string", { ...coordinatorMessages.error, fatal: "yes" }, "fatal"],
  ])("rejects %s", (_, message, field) => {
    expectRejected(coordinatorMessage, message, field);
  });
});

describe("workOrderCreate", () => {
  it("fills in defaults around an exec command", () => {
    expect(workOrderCreate.parse({ spec: { command: ["make", "test"] } })).toEqual({
      adapter: "exec",
      spec: { command: ["make", "test"], env: {} },
      selector: [],
      labels: {},
      priority: 0,
      maxAttempts: 1,
      retryOn: ["lost", "infrastructure"],
      retryBackoffSeconds: 10,
      metadata: {},
    });
  });

  it("accepts every field, and parses the selector into its canonical form", () => {
    const body = {
      adapter: "exec",
      spec: { script: "make test", shell: "/bin/bash", env: { CI: "1", _X9: "" }, cwd: "/src" },
      selector: "os=linux, arch in (arm64,amd64), !gpu",
      agent: "runner-1",
      labels: { team: "core" },
      priority: -1000,
      timeoutSeconds: 7 * 24 * 3600,
      maxAttempts: 100,
      retryOn: ["lost", "timed_out", "failed"],
      retryBackoffSeconds: 0,
      queueTimeoutSeconds: 60,
      idempotencyKey: x(256),
      metadata: { commit: "abc", pr: 12, tags: ["a"], nested: { ok: true, none: null } },
    };
    expect(workOrderCreate.parse(body)).toEqual({
      ...body,
      selector: [
        { key: "gpu", op: "notexists" },
        { key: "arch", op: "in", values: ["amd64", "arm64"] },
        { key: "os", op: "in", values: ["linux"] },
      ],
    });
    expect(workOrderCreate.parse({ ...body, priority: 1000, timeoutSeconds: 1, maxAttempts: 1 })).toMatchObject({
      priority: 1000,
    });
  });

  const valid = { spec: { command: ["true"] } };
  it.each<[string, unknown, string]>([
    ["an unknown field", { ...valid, retries: 3 }, "retries"],
    ["an unknown adapter", { ...valid, adapter: "docker" }, "adapter"],
    ["priority above 1000", { ...valid, priority: 1001 }, "priority"],
    ["priority below -1000", { ...valid, priority: -1001 }, "priority"],
    ["fractional priority", { ...valid, priority: 0.5 }, "priority"],
    ["priority as a string", { ...valid, priority: "1" }, "priority"],
    ["timeout 0", { ...valid, timeoutSeconds: 0 }, "timeoutSeconds"],
    ["timeout over a week", { ...valid, timeoutSeconds: 7 * 24 * 3600 + 1 }, "timeoutSeconds"],
    ["maxAttempts 0", { ...valid, maxAttempts: 0 }, "maxAttempts"],
    ["maxAttempts above 100", { ...valid, maxAttempts: 101 }, "maxAttempts"],
    ["empty idempotencyKey", { ...valid, idempotencyKey: "" }, "idempotencyKey"],
    ["oversize idempotencyKey", { ...valid, idempotencyKey: x(257) }, "idempotencyKey"],
    ["an invalid agent name", { ...valid, agent: "" }, "agent"],
    ["an invalid label key", { ...valid, labels: { "a b": "c" } }, "labels.a b"],
    // The key named is cut: it is the client's to choose, and a megabyte of it is not echoed.
    ["an oversize metadata key", { ...valid, metadata: { [x(257)]: 1 } }, `metadata.${x(63)}…`],
    ["non-JSON metadata", { ...valid, metadata: { at: new Date(0) } }, "metadata.at"],
    ["a selector that is not a string", { ...valid, selector: ["os=linux"] }, "selector"],
    ["a missing spec", {}, "spec"],
    ["a null spec", { spec: null }, "spec"],
    ["a spec with an unknown field", { spec: { command: ["true"], image: "alpine" } }, "spec.image"],
    ["a command that is a string", { spec: { command: "make test" } }, "spec.command"],
    ["an empty command", { spec: { command: [] } }, "spec.command"],
    ["a command with a non-string", { spec: { command: ["sleep", 1] } }, "spec.command.1"],
    ["a command of too many words", { spec: { command: Array.from({ length: 1025 }, () => "a") } }, "spec.command"],
    ["an oversize command word", { spec: { command: [x(65_537)] } }, "spec.command.0"],
    ["neither command nor script", { spec: {} }, "spec.command"],
    ["both command and script", { spec: { command: ["true"], script: "true" } }, "spec.command"],
    ["an empty script", { spec: { script: "" } }, "spec.script"],
    ["an oversize script", { spec: { script: x(128 * 1024) } }, "spec.script"],
    ["a script over 128 KiB as UTF-8, though fewer characters", { spec: { script: "é".repeat(64 * 1024) } }, "spec.script"],
    ["a shell without a script", { spec: { command: ["true"], shell: "bash" } }, "spec.shell"],
    ["an empty shell", { spec: { script: "true", shell: "" } }, "spec.shell"],
    ["an invalid environment variable name", { spec: { command: ["true"], env: { "1PATH": "x" } } }, "spec.env.1PATH"],
    ["a non-string environment value", { spec: { command: ["true"], env: { PATH: 1 } } }, "spec.env.PATH"],
    ["an empty cwd", { spec: { command: ["true"], cwd: "" } }, "spec.cwd"],
    ["an oversize cwd", { spec: { command: ["true"], cwd: x(4097) } }, "spec.cwd"],
  ])("rejects %s", (_, body, field) => {
    expectRejected(workOrderCreate, body, field);
  });

  it("names the exec rule that was broken", () => {
    expect(rejection(workOrderCreate, { spec: {} })).toEqual({
      field: "spec.command",
      message: "spec.command: give exactly one of command or script",
    });
    expect(rejection(workOrderCreate, { spec: { command: ["true"], shell: "sh" } }).message).toBe(
      "spec.shell: shell goes with script",
    );
    expect(rejection(workOrderCreate, { spec: { command: ["true"], extra: 1 } }).message).toBe("spec.extra: unknown field");
  });

  it.each<[string, number]>([
    ["os=linux,,arch", 9],
    ["arch in (a,b", 12],
    ["os=$", 3],
  ])("rejects the selector %j naming position %i", (selector, position) => {
    const error = expectRejected(workOrderCreate, { ...valid, selector }, "selector");
    expect(error.message).toMatch(new RegExp(`^selector: invalid selector: .* at position ${position}$`));
  });

  it("validates the spec the same way execSpec does", () => {
    const spec = { script: "echo hi", env: { A: "b" } };
    expect(workOrderCreate.parse({ spec }).spec).toEqual(execSpec.parse(spec));
  });
});

describe("workOrderQuery", () => {
  it("parses a query string's values", () => {
    expect(workOrderQuery.parse({})).toEqual({ limit: 50 });
    expect(
      workOrderQuery.parse({
        state: "running",
        labels: "team=core",
        selector: "os=linux,gpu",
        agent: "runner-1",
        limit: "500",
        before: "42",
      }),
    ).toEqual({
      state: "running",
      labels: [{ key: "team", op: "in", values: ["core"] }],
      selector: [
        { key: "gpu", op: "exists" },
        { key: "os", op: "in", values: ["linux"] },
      ],
      agent: "runner-1",
      limit: 500,
      before: "42",
    });
    expect(workOrderQuery.parse({ limit: "1" })).toEqual({ limit: 1 });
  });

  it.each<[string, Record<string, string>, string]>([
    ["an unknown parameter", { page: "2" }, "page"],
    ["an unknown state", { state: "queued" }, "state"],
    ["limit 0", { limit: "0" }, "limit"],
    ["limit above 500", { limit: "501" }, "limit"],
    ["a fractional limit", { limit: "1.5" }, "limit"],
    ["a non-numeric limit", { limit: "ten" }, "limit"],
    ["an empty limit", { limit: "" }, "limit"],
    ["a non-numeric cursor", { before: "abc" }, "before"],
    ["an invalid agent", { agent: "-x" }, "agent"],
    ["an invalid labels selector", { labels: "team=" + "x".repeat(64) }, "labels"],
  ])("rejects %s", (_, query, field) => {
    expectRejected(workOrderQuery, query, field);
  });

  it("names the selector error's position", () => {
    expect(rejection(workOrderQuery, { selector: "a in b" }).message).toBe(
      "selector: invalid selector: expected '(', found 'b' at position 5",
    );
  });
});

describe("jobQuery", () => {
  it("parses a query string's values", () => {
    expect(jobQuery.parse({ workOrder: "7", agent: "r", state: "claimed", limit: "5" })).toEqual({
      workOrder: "7",
      agent: "r",
      state: "claimed",
      limit: 5,
    });
  });

  it.each<[string, Record<string, string>, string]>([
    ["pending, which no job is", { state: "pending" }, "state"],
    ["a bad work order id", { workOrder: "0" }, "workOrder"],
    ["an unknown parameter", { selector: "os" }, "selector"],
  ])("rejects %s", (_, query, field) => {
    expectRejected(jobQuery, query, field);
  });
});

describe("logQuery", () => {
  it.each<[Record<string, string>, { offset: number; follow: boolean }]>([
    [{}, { offset: 0, follow: false }],
    [{ offset: "1024" }, { offset: 1024, follow: false }],
    [{ follow: "true" }, { offset: 0, follow: true }],
    [{ follow: "1" }, { offset: 0, follow: true }],
    [{ follow: "false" }, { offset: 0, follow: false }],
    [{ follow: "0" }, { offset: 0, follow: false }],
  ])("parses %j", (query, expected) => {
    expect(logQuery.parse(query)).toEqual(expected);
  });

  it.each<[string, Record<string, string>, string]>([
    ["a negative offset", { offset: "-1" }, "offset"],
    ["a fractional offset", { offset: "0.5" }, "offset"],
    ["a non-numeric offset", { offset: "start" }, "offset"],
    ["an unknown follow value", { follow: "yes" }, "follow"],
    ["an unknown parameter", { tail: "10" }, "tail"],
  ])("rejects %s", (_, query, field) => {
    expectRejected(logQuery, query, field);
  });
});

describe("tokenCreate", () => {
  it("accepts a name and a role", () => {
    for (const role of ["admin", "ci", "agent"]) {
      expect(tokenCreate.parse({ name: "deploy bot", role })).toEqual({ name: "deploy bot", role });
    }
    expect(tokenCreate.safeParse({ name: x(128), role: "ci" }).success).toBe(true);
  });

  it.each<[string, unknown, string]>([
    ["an empty name", { name: "", role: "ci" }, "name"],
    ["an oversize name", { name: x(129), role: "ci" }, "name"],
    ["a missing role", { name: "bot" }, "role"],
    ["an unknown role", { name: "bot", role: "root" }, "role"],
    ["an unknown field", { name: "bot", role: "ci", expires: "never" }, "expires"],
  ])("rejects %s", (_, body, field) => {
    expectRejected(tokenCreate, body, field);
  });
});

describe("describeIssues", () => {
  it("reports the first issue only", () => {
    expect(rejection(tokenCreate, { name: "", role: "root" }).field).toBe("name");
  });

  it("has no field for an issue at the root", () => {
    expect(rejection(tokenCreate, null)).toEqual({ message: "Invalid input: expected object, received null" });
  });

  it("copes with an error without issues", () => {
    expect(describeIssues(new z.ZodError([]))).toEqual({ message: "invalid input" });
  });
});
