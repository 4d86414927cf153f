CREATE TYPE "public"."agent_mode" AS ENUM('queue', 'work-order');--> statement-breakpoint
CREATE TYPE "public"."job_state" AS ENUM('claimed', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out');--> statement-breakpoint
CREATE TYPE "public"."role" AS ENUM('admin', 'ci', 'agent');--> statement-breakpoint
CREATE TYPE "public"."work_order_state" AS ENUM('pending', 'claimed', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out');--> statement-breakpoint
CREATE TABLE "agents" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"labels" jsonb NOT NULL,
	"capacity" integer NOT NULL,
	"mode" "agent_mode" NOT NULL,
	"version" text NOT NULL,
	"session_id" text,
	"last_seen_at" timestamp with time zone DEFAULT now() NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "agents_name_unique" UNIQUE("name")
);
--> statement-breakpoint
CREATE TABLE "job_logs" (
	"job_id" bigint NOT NULL,
	"offset" bigint NOT NULL,
	"data" text NOT NULL,
	CONSTRAINT "job_logs_job_id_offset_pk" PRIMARY KEY("job_id","offset")
);
--> statement-breakpoint
CREATE TABLE "jobs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"work_order_id" bigint NOT NULL,
	"attempt" integer NOT NULL,
	"agent_id" bigint NOT NULL,
	"state" "job_state" DEFAULT 'claimed' NOT NULL,
	"seq" integer DEFAULT 0 NOT NULL,
	"exit_code" integer,
	"error" text,
	"status" text,
	"external_id" text,
	"external_url" text,
	"log_bytes" bigint DEFAULT '0' NOT NULL,
	"cancel_reason" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "tokens" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"role" "role" NOT NULL,
	"hash" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"revoked_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "work_order_events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"work_order_id" bigint NOT NULL,
	"job_id" bigint,
	"from_state" "work_order_state",
	"to_state" "work_order_state" NOT NULL,
	"reason" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "work_orders" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"state" "work_order_state" DEFAULT 'pending' NOT NULL,
	"adapter" text NOT NULL,
	"spec" jsonb NOT NULL,
	"selector" jsonb NOT NULL,
	"selector_text" text NOT NULL,
	"target_agent" text,
	"labels" jsonb NOT NULL,
	"priority" integer DEFAULT 0 NOT NULL,
	"timeout_seconds" integer,
	"max_attempts" integer DEFAULT 1 NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"idempotency_key" text,
	"metadata" jsonb NOT NULL,
	"latest_job_id" bigint,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "work_orders_idempotency_key_unique" UNIQUE("idempotency_key"),
	CONSTRAINT "work_orders_attempts" CHECK ("work_orders"."attempts" <= "work_orders"."max_attempts")
);
--> statement-breakpoint
ALTER TABLE "job_logs" ADD CONSTRAINT "job_logs_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_work_order_id_work_orders_id_fk" FOREIGN KEY ("work_order_id") REFERENCES "public"."work_orders"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_agent_id_agents_id_fk" FOREIGN KEY ("agent_id") REFERENCES "public"."agents"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "work_order_events" ADD CONSTRAINT "work_order_events_work_order_id_work_orders_id_fk" FOREIGN KEY ("work_order_id") REFERENCES "public"."work_orders"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "jobs_work_order_attempt" ON "jobs" USING btree ("work_order_id","attempt");--> statement-breakpoint
CREATE INDEX "jobs_agent_active" ON "jobs" USING btree ("agent_id") WHERE state in ('claimed', 'running');--> statement-breakpoint
CREATE INDEX "work_order_events_work_order" ON "work_order_events" USING btree ("work_order_id","id");--> statement-breakpoint
CREATE INDEX "work_orders_pending" ON "work_orders" USING btree ("priority" DESC NULLS LAST,"id") WHERE state = 'pending';--> statement-breakpoint
CREATE INDEX "work_orders_state" ON "work_orders" USING btree ("state","id");