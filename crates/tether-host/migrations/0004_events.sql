-- The durable event log: every event a client produces, numbered without
-- gaps, for consumers that resume (SSE Last-Event-ID, polling) and webhooks.
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    client  TEXT NOT NULL,
    at_ms   INTEGER NOT NULL,
    event   TEXT NOT NULL
);
CREATE INDEX events_by_client ON events (client, seq);
