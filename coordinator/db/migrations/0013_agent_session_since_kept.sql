-- The first 0012 dropped session_since, which replicas still on 0011 write and read during a
-- rolling upgrade; 0012 now keeps it, and this gives it back to databases that ran the first one.
ALTER TABLE "agents" ADD COLUMN IF NOT EXISTS "session_since" timestamp with time zone;
