-- Several nodes on one store: the shared server secrets, leases on webhook events and on
-- periodic jobs. IF NOT EXISTS because consentry created these tables on every open before
-- they became a versioned migration: such a store is adopted unchanged. Never edit this file.
CREATE TABLE IF NOT EXISTS server_secrets (
  purpose TEXT NOT NULL,
  generation INTEGER NOT NULL,
  material BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  previous_until INTEGER NOT NULL,
  PRIMARY KEY (purpose, generation)
);
CREATE TABLE IF NOT EXISTS notification_leases (
  notification INTEGER PRIMARY KEY REFERENCES notifications(id),
  developer TEXT NOT NULL,
  node TEXT NOT NULL,
  lease_until INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notification_leases_by_developer ON notification_leases(developer);
CREATE TABLE IF NOT EXISTS job_leases (
  job TEXT PRIMARY KEY,
  node TEXT,
  lease_until INTEGER NOT NULL DEFAULT 0,
  next_due INTEGER NOT NULL
);
