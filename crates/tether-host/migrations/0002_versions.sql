-- Optimistic concurrency: every change bumps an instance's version; the API
-- exposes it as the ETag and checks If-Match against it.
ALTER TABLE instances ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
