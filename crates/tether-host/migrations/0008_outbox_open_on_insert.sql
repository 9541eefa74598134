-- The queue counts of appended messages are added once per client and
-- batch by the writer (sqlite_outbox.rs, insert_rows) instead of by a
-- trigger per row: the per-row trigger cost about 15 % of the durable
-- send rate. The other triggers (status changes, deletes) stay.
DROP TRIGGER outbox_open_on_insert;
