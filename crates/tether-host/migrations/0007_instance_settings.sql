-- Per-instance settings for the type's module (the global `settings`):
-- a JSON object whose keys override [client_type.settings].
ALTER TABLE instances ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
