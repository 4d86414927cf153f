// Bodies and query strings of the coordinator's HTTP API (`/v1`), and the shapes it returns.
import { z } from "zod";
import { adapterNames, adapterSpecs } from "./adapter-specs.ts";
import { agentName, id, labels, selector } from "./fields.ts";
import { jsonFits } from "./json-size.ts";
import { MAX_METADATA_BYTES, MAX_SPEC_BYTES, MAX_TIMEOUT_SECONDS } from "./limits.ts";
import { agentModes } from "./messages.ts";
import { DEFAULT_RETRY_ON, MAX_RETRY_DELAY_SECONDS, retryableEndings, type RetryableEnding } from "./retry.ts";
import { jobStates, workOrderStates } from "./states.ts";

export const roles = ["admin", "ci", "agent"] as const;
export type Role = (typeof roles)[number];

export const workOrderCreate = z
  .strictObject({
    adapter: z.enum(adapterNames).default("exec"),
    spec: z.custom<unknown>((value) => value !== undefined, "required"),
    selector: selector.default([]),
    /** Work-order mode: only the agent with this name may run it. */
    agent: agentName.optional(),
    labels: labels.default({}),
    priority: z.int().min(-1000).max(1000).default(0),
    timeoutSeconds: z.int().min(1).max(MAX_TIMEOUT_SECONDS).optional(),
    maxAttempts: z.int().min(1).max(100).default(1),
    /** Which endings of a job start another attempt while attempts are left. */
    retryOn: z.array(z.enum(retryableEndings)).max(retryableEndings.length).default(DEFAULT_RETRY_ON),
    /** The first retry waits about this long; each further one twice as long (with jitter). */
    retryBackoffSeconds: z.int().min(0).max(MAX_RETRY_DELAY_SECONDS).default(10),
    /** How long the work order may wait to be claimed before it ends `timed_out`. */
    queueTimeoutSeconds: z.int().min(1).max(30 * 24 * 3600).optional(),
    idempotencyKey: z.string().min(1).max(256).optional(),
    metadata: z
      .record(z.string().max(256), z.json())
      .refine((metadata) => jsonFits(metadata, MAX_METADATA_BYTES), `at most ${MAX_METADATA_BYTES} bytes as JSON`)
      .default({}),
  })
  .transform((body, ctx) => {
    const spec = adapterSpecs[body.adapter].safeParse(body.spec);
    if (!spec.success) {
      for (const issue of spec.error.issues) ctx.addIssue({ ...issue, path: ["spec", ...issue.path] } as never);
      return z.NEVER;
    }
    if (!jsonFits(spec.data, MAX_SPEC_BYTES)) {
      ctx.addIssue({ code: "custom", path: ["spec"], message: `at most ${MAX_SPEC_BYTES} bytes as JSON (it goes to the agent in one message)` });
      return z.NEVER;
    }
    return { ...body, spec: spec.data };
  });
export type WorkOrderCreate = z.infer<typeof workOrderCreate>;

export const MAX_BULK_ORDERS = 10_000;

/**
 * Many work orders in one request (`POST /v1/work-orders/bulk`), enqueued together. Each item is a
 * `workOrderCreate`, validated one by one as the coordinator inserts them, so that its validation
 * of the later ones overlaps the database's work on the earlier ones.
 */
export const workOrderBulk = z.strictObject({ workOrders: z.array(z.unknown()).min(1).max(MAX_BULK_ORDERS) });

/** A whole number in a query string: decimal digits only, so `0x10`, `1e2` and an empty value are refused. */
const queryNumber = (min: number, max: number) =>
  z.string().regex(/^[0-9]+$/, "expected a whole number in decimal digits").transform(Number).pipe(z.number().min(min).max(max));

const queryBoolean = z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1");

const listPaging = {
  limit: queryNumber(1, 500).default(50),
  /** Return rows with ids below this one (the `nextCursor` of the previous page). */
  before: id.optional(),
};

export const workOrderQuery = z.strictObject({
  state: z.enum(workOrderStates).optional(),
  /** A selector over the work orders' own labels, as `kubectl get -l`. */
  labels: selector.optional(),
  /** Work orders whose selector is exactly this one (after normalisation): one queue. */
  selector: selector.optional(),
  agent: agentName.optional(),
  ...listPaging,
});

/** Agents by name, a page at a time: `after` is the `next` of the page before. */
export const agentQuery = z.strictObject({
  connected: queryBoolean.optional(),
  /** A selector over the agents' labels, as `kubectl get -l`. */
  labels: selector.optional(),
  limit: listPaging.limit,
  after: agentName.optional(),
});

/** Live tokens, oldest first: `after` is the `next` of the page before. */
export const tokenQuery = z.strictObject({ limit: listPaging.limit, after: id.optional() });

export const jobQuery = z.strictObject({
  workOrder: id.optional(),
  agent: agentName.optional(),
  state: z.enum(jobStates).optional(),
  ...listPaging,
});

export const logQuery = z.strictObject({
  /** Byte offset into the log to start from. */
  offset: queryNumber(0, Number.MAX_SAFE_INTEGER).default(0),
  follow: queryBoolean.default(false),
});

/**
 * Where a followed log resumes: the `id` of the last event a follower received (the `Last-Event-ID`
 * header of a reconnecting server-sent events client), a job and the byte offset after that event.
 */
export const logCursor = z
  .string()
  .regex(/^[0-9]+:[0-9]{1,16}$/, "expected JOB:OFFSET, the id of a log event")
  .transform((text) => {
    const [jobId, offset] = text.split(":") as [string, string];
    return { jobId, offset: Number(offset) };
  })
  .pipe(z.strictObject({ jobId: id, offset: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) }));
export type LogCursor = z.output<typeof logCursor>;

export const logCursorOf = (jobId: string, offset: number) => `${jobId}:${offset}`;

export const tokenCreate = z.strictObject({
  name: z.string().min(1).max(128),
  role: z.enum(roles),
});

export type JobView = {
  id: string;
  workOrderId: string;
  attempt: number;
  agent: string;
  state: (typeof jobStates)[number];
  exitCode: number | null;
  error: string | null;
  /** The job failed through no fault of its own (the agent or adapter could not run it). */
  infrastructure: boolean;
  status: string | null;
  externalId: string | null;
  externalUrl: string | null;
  logBytes: number;
  createdAt: string;
  /** When its run started (`job.started`); while the job is `starting`, when the agent said so. */
  startedAt: string | null;
  finishedAt: string | null;
};

export type WorkOrderView = {
  id: string;
  state: (typeof workOrderStates)[number];
  adapter: string;
  spec: unknown;
  selector: string;
  agent: string | null;
  labels: Record<string, string>;
  priority: number;
  timeoutSeconds: number | null;
  maxAttempts: number;
  attempts: number;
  retryOn: RetryableEnding[];
  retryBackoffSeconds: number;
  queueTimeoutSeconds: number | null;
  /** When a pending work order becomes claimable (later than now while it waits to be retried). */
  runAfter: string;
  idempotencyKey: string | null;
  metadata: Record<string, unknown>;
  createdAt: string;
  updatedAt: string;
  latestJob: JobView | null;
};

export type WorkOrderEventView = {
  at: string;
  jobId: string | null;
  from: string | null;
  to: string;
  reason: string | null;
};

export type AgentView = {
  id: string;
  name: string;
  labels: Record<string, string>;
  capacity: number;
  /** Jobs it holds beyond its capacity, queued to begin as slots free. */
  prefetch: number;
  mode: (typeof agentModes)[number];
  version: string;
  connected: boolean;
  lastSeenAt: string;
};

export type TokenView = { id: string; name: string; role: Role; createdAt: string };

/** The server-sent events of a followed log. `offset` of a `job` event: where its log follows from. */
export type LogEvent =
  | { type: "job"; jobId: string; attempt: number; offset: number }
  | { type: "log"; jobId: string; offset: number; data: string }
  /** `state` is the work order's, or the job's when one job's log is followed; `error`, why its last job failed, where it says. */
  | { type: "end"; state: (typeof workOrderStates)[number] | (typeof jobStates)[number]; exitCode: number | null; error?: string };

export type ApiError = { error: { code: string; message: string; field?: string } };
