CREATE TABLE instances (
    key            TEXT PRIMARY KEY NOT NULL,
    type_name      TEXT NOT NULL,
    predefined     INTEGER NOT NULL DEFAULT 0,
    url            TEXT NOT NULL,
    user           TEXT,
    password       TEXT,
    headers        TEXT NOT NULL DEFAULT '{}',
    timeout_secs   INTEGER NOT NULL DEFAULT 30,
    auto_connect   INTEGER NOT NULL DEFAULT 0,
    use_env_proxy  INTEGER NOT NULL DEFAULT 0,
    created_ms     INTEGER NOT NULL,
    updated_ms     INTEGER NOT NULL
);

CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms    INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    key      TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE settings (
    name   TEXT PRIMARY KEY NOT NULL,
    value  TEXT NOT NULL
);
