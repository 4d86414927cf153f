ALTER TABLE "agents" ADD COLUMN "session_since" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN "session_seen_at" timestamp with time zone;