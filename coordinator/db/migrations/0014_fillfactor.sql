-- A work order is rewritten at least twice (claimed, then ended), and none of its indexes lets the
-- rewrite be HOT. Packed pages sent each new version to another page, which Postgres logs as a row
-- lock on top of the update; half a page kept free keeps both versions on the row's own page.
-- Jobs are left packed: they are rewritten once or twice, and kept for as long as their history.
ALTER TABLE "work_orders" SET (fillfactor = 50);
