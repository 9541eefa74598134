-- Webhook batches given up on (too many attempts, too old, or trimmed from
-- the log before delivery): kept for operators, replayable by sequence.
CREATE TABLE webhook_dead (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook     TEXT NOT NULL,
    from_seq    INTEGER NOT NULL,
    to_seq      INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    last_error  TEXT NOT NULL,
    at_ms       INTEGER NOT NULL
);
