ALTER TABLE "job_logs" DROP CONSTRAINT "job_logs_job_id_jobs_id_fk";
--> statement-breakpoint
ALTER TABLE "jobs" DROP CONSTRAINT "jobs_work_order_id_work_orders_id_fk";
--> statement-breakpoint
ALTER TABLE "jobs" DROP CONSTRAINT "jobs_agent_id_agents_id_fk";
