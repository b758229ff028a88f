-- Several nodes on one database: the shared server secrets, leases on webhook events and on
-- periodic jobs (as store-sqlite's V2__nodes.sql). Never edit this file: add V3__….sql.
CREATE TABLE server_secrets (
  purpose TEXT COLLATE "C" NOT NULL,
  generation BIGINT NOT NULL,
  material BYTEA NOT NULL CHECK (octet_length(material) = 32),
  created_at BIGINT NOT NULL,
  previous_until BIGINT NOT NULL,
  PRIMARY KEY (purpose, generation)
);
CREATE TABLE notification_leases (
  notification BIGINT PRIMARY KEY REFERENCES notifications(id),
  developer TEXT COLLATE "C" NOT NULL,
  node TEXT COLLATE "C" NOT NULL,
  lease_until BIGINT NOT NULL
);
CREATE INDEX notification_leases_by_developer ON notification_leases(developer);
CREATE TABLE job_leases (
  job TEXT COLLATE "C" PRIMARY KEY,
  node TEXT COLLATE "C",
  lease_until BIGINT NOT NULL DEFAULT 0,
  next_due BIGINT NOT NULL
);
