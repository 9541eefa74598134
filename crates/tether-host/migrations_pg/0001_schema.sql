-- The PostgreSQL store: the same tables as the SQLite store (migrations/),
-- for several hosts sharing one database, plus the cluster's tables.
CREATE TABLE instances (
    key            TEXT PRIMARY KEY,
    type_name      TEXT NOT NULL,
    predefined     BOOLEAN NOT NULL DEFAULT FALSE,
    url            TEXT NOT NULL,
    "user"         TEXT,
    password       TEXT,
    headers        TEXT NOT NULL DEFAULT '{}',
    timeout_secs   BIGINT NOT NULL DEFAULT 30,
    auto_connect   BOOLEAN NOT NULL DEFAULT FALSE,
    use_env_proxy  BOOLEAN NOT NULL DEFAULT FALSE,
    settings       TEXT NOT NULL DEFAULT '{}',
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL,
    version        BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE audit (
    id       BIGSERIAL PRIMARY KEY,
    at_ms    BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    key      TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

CREATE TABLE outbox (
    seq         BIGSERIAL PRIMARY KEY,
    client      TEXT NOT NULL,
    msg_id      TEXT NOT NULL,
    is_binary   BOOLEAN NOT NULL,
    payload     BYTEA NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending',
    attempts    BIGINT NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT,
    done_ms     BIGINT,
    UNIQUE (client, msg_id)
);
CREATE INDEX outbox_by_client ON outbox (client, status, seq);

-- Messages and bytes not yet done (pending or in flight) per client. The
-- writer adds appends itself (once per client and batch); triggers follow
-- status changes and deletes.
CREATE TABLE outbox_open (
    client    TEXT PRIMARY KEY,
    messages  BIGINT NOT NULL DEFAULT 0,
    bytes     BIGINT NOT NULL DEFAULT 0
);

CREATE FUNCTION outbox_open_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status IN ('pending', 'in-flight')
       AND (TG_OP = 'DELETE' OR NEW.status NOT IN ('pending', 'in-flight')) THEN
        UPDATE outbox_open SET messages = messages - 1, bytes = bytes - octet_length(OLD.payload)
            WHERE client = OLD.client;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.status NOT IN ('pending', 'in-flight')
       AND NEW.status IN ('pending', 'in-flight') THEN
        INSERT INTO outbox_open (client, messages, bytes) VALUES (NEW.client, 1, octet_length(NEW.payload))
            ON CONFLICT (client) DO UPDATE SET messages = outbox_open.messages + 1,
                bytes = outbox_open.bytes + octet_length(NEW.payload);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_open_on_change AFTER UPDATE OF status OR DELETE ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_open_follow();

-- The event log's numbers are handed out under this row's lock, held
-- until the appending transaction commits: gap-free, in commit order, even
-- with several hosts appending.
CREATE TABLE event_seq (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    last  BIGINT NOT NULL
);
INSERT INTO event_seq (id, last) VALUES (1, 0);

CREATE TABLE events (
    seq     BIGINT PRIMARY KEY,
    client  TEXT NOT NULL,
    at_ms   BIGINT NOT NULL,
    event   TEXT NOT NULL
);
CREATE INDEX events_by_client ON events (client, seq);

CREATE TABLE webhook_dead (
    id          BIGSERIAL PRIMARY KEY,
    webhook     TEXT NOT NULL,
    from_seq    BIGINT NOT NULL,
    to_seq      BIGINT NOT NULL,
    events      BIGINT NOT NULL,
    attempts    BIGINT NOT NULL,
    last_error  TEXT NOT NULL,
    at_ms       BIGINT NOT NULL
);

-- The cluster: live nodes, and which node owns which client. Times come
-- from the database's clock (now()), never a node's.
CREATE TABLE nodes (
    node_id       TEXT PRIMARY KEY,
    addr          TEXT NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE leases (
    key         TEXT PRIMARY KEY,
    node_id     TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX leases_by_node ON leases (node_id);
