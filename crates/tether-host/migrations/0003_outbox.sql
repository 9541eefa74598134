-- The durable outbox: messages accepted for a client and not yet done.
-- seq is the order of delivery per client (FIFO) and the API's sequence
-- number; msg_id is the caller's idempotency key (unique per client).
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    client      TEXT NOT NULL,
    msg_id      TEXT NOT NULL,
    is_binary   INTEGER NOT NULL,
    payload     BLOB NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER,
    done_ms     INTEGER,
    UNIQUE (client, msg_id)
);
CREATE INDEX outbox_by_client ON outbox (client, status, seq);
