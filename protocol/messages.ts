// Every WebSocket message between agent and coordinator. Job-scoped messages from the agent carry
// a per-job sequence number: the coordinator applies each once, in order, and acknowledges it, so
// an agent may resend anything unacknowledged after a reconnect.
import { z } from "zod";
import { adapterNames } from "./adapter-specs.ts";
import { agentName, id, labels } from "./fields.ts";
import {
  INT32,
  MAX_CAPACITY,
  MAX_ERROR_CHARS,
  MAX_EXTERNAL_ID_CHARS,
  MAX_LEASE_SECONDS,
  MAX_LOG_CHUNK_BYTES,
  MAX_PREFETCH,
  MAX_STATUS_CHARS,
  MAX_TIMEOUT_SECONDS,
  MAX_URL_CHARS,
  MIN_BEAT_SECONDS,
} from "./limits.ts";
import { outcomes } from "./states.ts";

export const agentModes = ["queue", "work-order"] as const;
export type AgentMode = (typeof agentModes)[number];

const jobScoped = { jobId: id, seq: z.int().min(1) };
export const externalId = z.string().min(1).max(MAX_EXTERNAL_ID_CHARS);
/** A link for people to follow to the external run: http or https only (no `javascript:` in a UI). */
export const externalUrl = z.url({ protocol: /^https?$/ }).max(MAX_URL_CHARS);
const externalRef = { externalId: externalId.optional(), externalUrl: externalUrl.optional() };

export const hello = z.strictObject({
  type: z.literal("hello"),
  protocol: z.int(),
  token: z.string().min(1).max(512),
  name: agentName,
  labels,
  capacity: z.int().min(1).max(MAX_CAPACITY),
  /** Jobs the agent holds beyond its capacity, queued to begin as slots free. */
  prefetch: z.int().min(0).max(MAX_PREFETCH).default(0),
  /** Stored and shown: printable ASCII (a NUL would be refused by the database on every reconnect). */
  version: z.string().regex(/^[\x20-\x7e]{1,64}$/, "expected 1-64 printable ASCII characters"),
  mode: z.enum(agentModes).default("queue"),
});

/** Adds `slots` free slots to the agent's open claim; the coordinator fills it as work arrives. */
export const claim = z.strictObject({ type: z.literal("claim"), slots: z.int().min(1).max(MAX_CAPACITY + MAX_PREFETCH) });

/** Withdraws the agent's open claim: it is shutting down and takes no more work. */
export const drain = z.strictObject({ type: z.literal("drain") });

export const heartbeat = z.strictObject({ type: z.literal("heartbeat") });

/** Sent before the adapter is called: from here the job may have begun, and is no longer given back unrun. */
export const jobStarting = z.strictObject({ type: z.literal("job.starting"), ...jobScoped });

export const jobStarted = z.strictObject({ type: z.literal("job.started"), ...jobScoped, ...externalRef });

export const jobStatus = z.strictObject({
  type: z.literal("job.status"),
  ...jobScoped,
  status: z.string().min(1).max(MAX_STATUS_CHARS),
  ...externalRef,
});

/** `data` is bounded in UTF-8 bytes by the agent; the string bound here is the same in code units. */
export const jobLog = z.strictObject({ type: z.literal("job.log"), ...jobScoped, data: z.string().min(1).max(MAX_LOG_CHUNK_BYTES) });

export const jobFinished = z.strictObject({
  type: z.literal("job.finished"),
  ...jobScoped,
  outcome: z.enum(outcomes),
  exitCode: z.int().min(INT32.min).max(INT32.max).nullable().default(null),
  error: z.string().max(MAX_ERROR_CHARS).optional(),
  /** The agent or adapter could not run the job (not the job's own failure); retried by default. */
  infrastructure: z.boolean().optional(),
});

export const agentMessage = z.discriminatedUnion("type", [
  hello,
  claim,
  drain,
  heartbeat,
  jobStarting,
  jobStarted,
  jobStatus,
  jobLog,
  jobFinished,
]);
export type AgentMessage = z.infer<typeof agentMessage>;
export type JobMessage = Extract<AgentMessage, { jobId: string }>;

export const externalRun = z.strictObject({ externalId, externalUrl: z.string().max(MAX_URL_CHARS).nullable() });
export type ExternalRun = z.infer<typeof externalRun>;

export const assignment = z.strictObject({
  jobId: id,
  workOrderId: id,
  attempt: z.int().min(1),
  /** The work order's priority: an agent holding jobs ahead begins them highest first, then oldest. */
  priority: z.int(),
  adapter: z.enum(adapterNames),
  spec: z.unknown(),
  timeoutSeconds: z.int().positive().max(MAX_TIMEOUT_SECONDS).nullable(),
  /** The run the previous attempt started and lost hold of: follow it rather than start another. */
  adopt: externalRun.nullable(),
});
export type Assignment = z.infer<typeof assignment>;

export const coordinatorMessage = z.discriminatedUnion("type", [
  z.strictObject({
    type: z.literal("welcome"),
    agentId: id,
    heartbeatSeconds: z.number().min(MIN_BEAT_SECONDS).max(MAX_LEASE_SECONDS),
    /** How long the agent's jobs stay its own once it is out of touch; after that they are lost. */
    leaseSeconds: z.number().min(MIN_BEAT_SECONDS).max(MAX_LEASE_SECONDS),
    /** The highest sequence number the coordinator holds for each of this agent's open jobs. */
    jobs: z.array(z.strictObject({ jobId: id, seq: z.int().min(0) })),
  }),
  z.strictObject({ type: z.literal("assign"), job: assignment }),
  z.strictObject({ type: z.literal("cancel"), jobId: id, reason: z.string().max(1024) }),
  /** The coordinator holds every message of the job up to `seq`. */
  z.strictObject({ type: z.literal("ack"), jobId: id, seq: z.int().min(0) }),
  z.strictObject({
    type: z.literal("error"),
    code: z.string(),
    message: z.string(),
    /** Set when the error concerns one job message. */
    jobId: id.optional(),
    fatal: z.boolean().default(false),
  }),
]);
export type CoordinatorMessage = z.infer<typeof coordinatorMessage>;

/**
 * The `error` code of a job message the coordinator took but could not apply (its database refused
 * it): nothing of it was applied, and the agent sends it again later.
 */
export const NOT_APPLIED = "not_applied";
