-- The new states are used by the indexes below in this same transaction, which Postgres allows
-- only for values of a type created in it: so the type is made anew rather than given values.
ALTER TYPE "public"."job_state" RENAME TO "job_state_old";--> statement-breakpoint
CREATE TYPE "public"."job_state" AS ENUM('claimed', 'starting', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out', 'lost', 'returned');--> statement-breakpoint
DROP INDEX "jobs_work_order_attempt";--> statement-breakpoint
DROP INDEX "jobs_agent_active";--> statement-breakpoint
ALTER TABLE "jobs" ALTER COLUMN "state" DROP DEFAULT;--> statement-breakpoint
ALTER TABLE "jobs" ALTER COLUMN "state" SET DATA TYPE "public"."job_state" USING "state"::text::"public"."job_state";--> statement-breakpoint
ALTER TABLE "jobs" ALTER COLUMN "state" SET DEFAULT 'claimed';--> statement-breakpoint
DROP TYPE "public"."job_state_old";--> statement-breakpoint
CREATE UNIQUE INDEX "jobs_work_order_attempt" ON "jobs" USING btree ("work_order_id","attempt") WHERE state <> 'returned';--> statement-breakpoint
CREATE INDEX "jobs_agent_active" ON "jobs" USING btree ("agent_id") WHERE state in ('claimed', 'starting', 'running');
