-- Messages and bytes not yet done (pending or in flight) per client, kept
-- by triggers, so that the limit check on every durable send is one lookup
-- instead of a scan of the client's queue.
CREATE TABLE outbox_open (
    client    TEXT PRIMARY KEY NOT NULL,
    messages  INTEGER NOT NULL DEFAULT 0,
    bytes     INTEGER NOT NULL DEFAULT 0
);
INSERT INTO outbox_open (client, messages, bytes)
    SELECT client, COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox
    WHERE status IN ('pending', 'in-flight') GROUP BY client;

CREATE TRIGGER outbox_open_on_insert AFTER INSERT ON outbox
WHEN NEW.status IN ('pending', 'in-flight')
BEGIN
    INSERT OR IGNORE INTO outbox_open (client, messages, bytes) VALUES (NEW.client, 0, 0);
    UPDATE outbox_open SET messages = messages + 1, bytes = bytes + LENGTH(NEW.payload)
        WHERE client = NEW.client;
END;

CREATE TRIGGER outbox_open_on_leave AFTER UPDATE OF status ON outbox
WHEN OLD.status IN ('pending', 'in-flight') AND NEW.status NOT IN ('pending', 'in-flight')
BEGIN
    UPDATE outbox_open SET messages = messages - 1, bytes = bytes - LENGTH(OLD.payload)
        WHERE client = OLD.client;
END;

CREATE TRIGGER outbox_open_on_return AFTER UPDATE OF status ON outbox
WHEN OLD.status NOT IN ('pending', 'in-flight') AND NEW.status IN ('pending', 'in-flight')
BEGIN
    INSERT OR IGNORE INTO outbox_open (client, messages, bytes) VALUES (NEW.client, 0, 0);
    UPDATE outbox_open SET messages = messages + 1, bytes = bytes + LENGTH(NEW.payload)
        WHERE client = NEW.client;
END;

CREATE TRIGGER outbox_open_on_delete AFTER DELETE ON outbox
WHEN OLD.status IN ('pending', 'in-flight')
BEGIN
    UPDATE outbox_open SET messages = messages - 1, bytes = bytes - LENGTH(OLD.payload)
        WHERE client = OLD.client;
END;
