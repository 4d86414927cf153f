ALTER TYPE "public"."job_state" ADD VALUE 'lost';--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN "lease_expires_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "infrastructure" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "work_orders" ADD COLUMN "retry_on" text[] DEFAULT '{lost,infrastructure}' NOT NULL;--> statement-breakpoint
ALTER TABLE "work_orders" ADD COLUMN "retry_backoff_seconds" integer DEFAULT 10 NOT NULL;--> statement-breakpoint
ALTER TABLE "work_orders" ADD COLUMN "queue_timeout_seconds" integer;--> statement-breakpoint
ALTER TABLE "work_orders" ADD COLUMN "run_after" timestamp with time zone DEFAULT now() NOT NULL;