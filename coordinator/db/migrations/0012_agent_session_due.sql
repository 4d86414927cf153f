ALTER TABLE "agents" ADD COLUMN "session_due" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "agents" DROP COLUMN "session_since";