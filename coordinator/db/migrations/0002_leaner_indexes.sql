ALTER TABLE "work_orders" DROP CONSTRAINT "work_orders_idempotency_key_unique";--> statement-breakpoint
ALTER TABLE "work_order_events" DROP CONSTRAINT "work_order_events_pkey";--> statement-breakpoint
CREATE UNIQUE INDEX "work_orders_idempotency_key" ON "work_orders" USING btree ("idempotency_key") WHERE idempotency_key IS NOT NULL;
