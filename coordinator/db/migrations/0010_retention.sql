ALTER TABLE "jobs" ADD COLUMN "agent_name" text;--> statement-breakpoint
UPDATE "jobs" SET "agent_name" = "agents"."name" FROM "agents" WHERE "agents"."id" = "jobs"."agent_id";--> statement-breakpoint
ALTER TABLE "jobs" ALTER COLUMN "agent_name" SET NOT NULL;--> statement-breakpoint
CREATE INDEX "jobs_returned" ON "jobs" USING btree ("work_order_id") WHERE state = 'returned';--> statement-breakpoint
CREATE INDEX "work_orders_ended" ON "work_orders" USING btree ("updated_at") WHERE state IN ('succeeded', 'failed', 'cancelled', 'timed_out');
