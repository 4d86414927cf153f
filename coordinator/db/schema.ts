// The coordinator's tables. Migrations in ./migrations are generated from this file
// (`npm run db:generate`) and applied at start.
import { sql } from "drizzle-orm";
import {
  boolean,
  check,
  customType,
  index,
  integer,
  jsonb,
  pgEnum,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
} from "drizzle-orm/pg-core";
import { agentModes } from "../../protocol/messages.ts";
import { roles } from "../../protocol/api.ts";
import type { RetryableEnding } from "../../protocol/retry.ts";
import type { Labels, Selector } from "../../protocol/selector.ts";
import { jobStates, workOrderStates } from "../../protocol/states.ts";

/** A bigint carried as a decimal string, the same on PGlite and postgres-js. */
const bigintText = customType<{ data: string; driverData: string | number }>({
  dataType: () => "bigint",
  fromDriver: (value) => String(value),
});

const bigserialText = customType<{ data: string; driverData: string | number }>({
  dataType: () => "bigserial",
  fromDriver: (value) => String(value),
});

const id = () =>
  bigserialText("id")
    .primaryKey()
    .$defaultFn(() => sql`DEFAULT`);
const at = (name: string) => timestamp(name, { withTimezone: true, mode: "date" });
const createdAt = () => at("created_at").notNull().defaultNow();

export const workOrderState = pgEnum("work_order_state", workOrderStates);
export const jobState = pgEnum("job_state", jobStates);
export const agentMode = pgEnum("agent_mode", agentModes);
export const role = pgEnum("role", roles);

export const agents = pgTable("agents", {
  id: id(),
  name: text("name").notNull().unique(),
  labels: jsonb("labels").$type<Labels>().notNull(),
  capacity: integer("capacity").notNull(),
  /** Jobs it holds beyond its capacity, queued to begin as slots free. */
  prefetch: integer("prefetch").notNull().default(0),
  mode: agentMode("mode").notNull(),
  version: text("version").notNull(),
  /**
   * The token the name was last let in with: while it is good, a hello under this name with
   * another token is refused, so that one agent's token cannot take over another's name and jobs.
   */
  tokenId: bigintText("token_id"),
  /** The coordinator session holding the agent's socket; null while it is disconnected. */
  sessionId: text("session_id"),
  /**
   * When the coordinator holding the session last renewed it (null until then), and by when it
   * will have renewed it again, by its own heartbeat: a registration alone does not show that its
   * socket lives (it may have landed after the socket closed), a renewal does. Another replica's
   * older session for the name closes (4002) once this one is renewed, and takes the name back if
   * it is not renewed by then.
   */
  sessionSeenAt: at("session_seen_at"),
  sessionDue: at("session_due"),
  /**
   * When the session registered or took the name back: what replicas before `session_due` judge a
   * registration by. Still written so that they work alongside this version during an upgrade.
   */
  sessionSince: at("session_since"),
  /** Renewed while the agent is connected; once it passes, the agent's open jobs are lost. */
  leaseExpiresAt: at("lease_expires_at"),
  lastSeenAt: at("last_seen_at").notNull().defaultNow(),
  createdAt: createdAt(),
});

// fillfactor 50, set by migration 0014 (drizzle has no table storage parameters): see it for why.
export const workOrders = pgTable(
  "work_orders",
  {
    id: id(),
    state: workOrderState("state").notNull().default("pending"),
    adapter: text("adapter").notNull(),
    spec: jsonb("spec").notNull(),
    selector: jsonb("selector").$type<Selector>().notNull(),
    selectorText: text("selector_text").notNull(),
    targetAgent: text("target_agent"),
    labels: jsonb("labels").$type<Labels>().notNull(),
    priority: integer("priority").notNull().default(0),
    timeoutSeconds: integer("timeout_seconds"),
    maxAttempts: integer("max_attempts").notNull().default(1),
    attempts: integer("attempts").notNull().default(0),
    retryOn: text("retry_on")
      .array()
      .$type<RetryableEnding[]>()
      .notNull()
      .default(sql`'{lost,infrastructure}'`),
    retryBackoffSeconds: integer("retry_backoff_seconds").notNull().default(10),
    queueTimeoutSeconds: integer("queue_timeout_seconds"),
    /** A pending work order is claimable from this time on (later than now while it waits to be retried). */
    runAfter: at("run_after").notNull().defaultNow(),
    idempotencyKey: text("idempotency_key"),
    metadata: jsonb("metadata").$type<Record<string, unknown>>().notNull(),
    latestJobId: bigintText("latest_job_id"),
    createdAt: createdAt(),
    updatedAt: at("updated_at").notNull().defaultNow(),
  },
  (t) => [
    index("work_orders_pending").on(t.priority.desc(), t.id).where(sql`state = 'pending'`),
    // Listing by state, newest first. Not the two commonest states, so that an enqueue and a success
    // add no entry: pending work orders are the newest, and most others have succeeded, so a walk
    // back along the key finds a page of either soon.
    index("work_orders_state").on(t.state, t.id).where(sql`state NOT IN ('pending', 'succeeded')`),
    // Work addressed to an agent, found by its name: only such rows have an entry.
    index("work_orders_addressed")
      .on(t.targetAgent, t.priority.desc(), t.id)
      .where(sql`state = 'pending' AND target_agent IS NOT NULL`),
    // Partial: most work orders have no key, and an index entry per row version would be written for nothing.
    uniqueIndex("work_orders_idempotency_key").on(t.idempotencyKey).where(sql`idempotency_key IS NOT NULL`),
    // The reaper's sweeps, every second: without these they would scan the whole backlog. Both hold
    // only the few rows they serve, so the common work order adds no entry to either.
    index("work_orders_queue_timeout").on(t.id).where(sql`state = 'pending' AND queue_timeout_seconds IS NOT NULL`),
    index("work_orders_retry_due").on(t.runAfter).where(sql`state = 'pending' AND attempts > 0`),
    // Retention's: ended work orders by when they ended. An ended row is never updated again, so
    // this costs one entry per work order.
    index("work_orders_ended").on(t.updatedAt).where(sql`state IN ('succeeded', 'failed', 'cancelled', 'timed_out')`),
    check("work_orders_attempts", sql`${t.attempts} <= ${t.maxAttempts}`),
  ],
);

// No foreign keys from jobs or their logs: they are deleted only with their work order (retention),
// a job is created only by the claim, in the statement that locks and moves its work order, for
// an agent that has said hello, and a log chunk only for a job its batch has locked. Each key costs a trigger, a lookup and a
// row lock per insert (on the agent's row, which every claim for it shares): with the two of jobs,
// the claim took 146 µs of Postgres' time a job, against 98 without.
export const jobs = pgTable(
  "jobs",
  {
    id: id(),
    workOrderId: bigintText("work_order_id").notNull(),
    attempt: integer("attempt").notNull(),
    agentId: bigintText("agent_id").notNull(),
    /** The agent's name when it took the job: the job's record outlives the agent's row (retention). */
    agentName: text("agent_name").notNull(),
    state: jobState("state").notNull().default("claimed"),
    /** The highest sequence number applied from the agent; repeats at or below it are ignored. */
    seq: integer("seq").notNull().default(0),
    exitCode: integer("exit_code"),
    error: text("error"),
    /** The job failed through no fault of its own: the agent or adapter could not run it. */
    infrastructure: boolean("infrastructure").notNull().default(false),
    status: text("status"),
    externalId: text("external_id"),
    externalUrl: text("external_url"),
    logBytes: bigintText("log_bytes").notNull().default("0"),
    cancelReason: text("cancel_reason"),
    createdAt: createdAt(),
    /**
     * When the run started, or while the job is starting, when its agent began to start it: the
     * reaper's run timeout counts from it. The agent's counts from just before `job.starting`, so a
     * slow start only makes the reaper's later, which it may be: it is the agent's backstop.
     */
    startedAt: at("started_at"),
    finishedAt: at("finished_at"),
  },
  (t) => [
    // A job returned before it began shares its attempt number with the job that replaces it.
    uniqueIndex("jobs_work_order_attempt").on(t.workOrderId, t.attempt).where(sql`state <> 'returned'`),
    index("jobs_agent_active").on(t.agentId).where(sql`state in ('claimed', 'starting', 'running')`),
    // Retention finds a work order's jobs through the index above, which leaves out returned ones.
    index("jobs_returned").on(t.workOrderId).where(sql`state = 'returned'`),
  ],
);

export const jobLogs = pgTable(
  "job_logs",
  {
    jobId: bigintText("job_id").notNull(),
    /** Byte offset of this chunk in the job's whole log. */
    offset: bigintText("offset").notNull(),
    data: text("data").notNull(),
  },
  (t) => [primaryKey({ columns: [t.jobId, t.offset] })],
);

export const workOrderEvents = pgTable(
  "work_order_events",
  {
    // Read only through their work order (the index below): a primary key would be an index
    // entry per event, four per job, that nothing reads. Nor is there a foreign key: events are
    // written only in the statement that moves their work order, and the check would cost a lookup
    // and a row lock per event.
    id: bigserialText("id")
      .notNull()
      .$defaultFn(() => sql`DEFAULT`),
    workOrderId: bigintText("work_order_id").notNull(),
    jobId: bigintText("job_id"),
    fromState: workOrderState("from_state"),
    toState: workOrderState("to_state").notNull(),
    reason: text("reason"),
    at: createdAt(),
  },
  (t) => [index("work_order_events_work_order").on(t.workOrderId, t.id)],
);

export const tokens = pgTable("tokens", {
  id: id(),
  name: text("name").notNull(),
  role: role("role").notNull(),
  /** SHA-256 of the token's secret part; the secret itself is never stored. */
  hash: text("hash").notNull(),
  createdAt: createdAt(),
  revokedAt: at("revoked_at"),
});
