DROP INDEX "work_orders_state";--> statement-breakpoint
CREATE INDEX "work_orders_state" ON "work_orders" USING btree ("state","id") WHERE state NOT IN ('pending', 'succeeded');