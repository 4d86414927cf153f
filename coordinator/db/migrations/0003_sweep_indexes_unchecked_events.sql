ALTER TABLE "work_order_events" DROP CONSTRAINT "work_order_events_work_order_id_work_orders_id_fk";
--> statement-breakpoint
CREATE INDEX "work_orders_queue_timeout" ON "work_orders" USING btree ("id") WHERE state = 'pending' AND queue_timeout_seconds IS NOT NULL;--> statement-breakpoint
CREATE INDEX "work_orders_retry_due" ON "work_orders" USING btree ("run_after") WHERE state = 'pending' AND attempts > 0;