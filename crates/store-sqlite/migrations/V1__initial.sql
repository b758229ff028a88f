-- consentry's SQLite schema as it was before versioned migrations. Access facts have a
-- current table (for serving) and a history table (append-only, for reconstructing any past
-- instant); both are written in the same transaction. Instants are milliseconds since 1970 UTC.
-- Every statement says IF NOT EXISTS so that a store written before migrations were versioned
-- is adopted as version 1 unchanged. Never edit this file: add V2__….sql.

CREATE TABLE IF NOT EXISTS members (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  picture_url TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS posts (
  id TEXT PRIMARY KEY,
  group_id TEXT NOT NULL REFERENCES groups(id),
  author TEXT NOT NULL REFERENCES members(id),
  content TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS posts_by_group ON posts(group_id, id);
CREATE TABLE IF NOT EXISTS developers (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  contact_email TEXT NOT NULL,
  webhook_url TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS apps (
  id TEXT PRIMARY KEY,
  developer TEXT NOT NULL REFERENCES developers(id),
  name TEXT NOT NULL,
  category TEXT NOT NULL,
  status TEXT NOT NULL,
  client_id TEXT NOT NULL UNIQUE,
  secret_hash TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS app_status_history (
  seq INTEGER PRIMARY KEY,
  app TEXT NOT NULL,
  status TEXT NOT NULL,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS memberships (
  group_id TEXT NOT NULL,
  member_id TEXT NOT NULL,
  role TEXT NOT NULL,
  PRIMARY KEY (group_id, member_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS membership_history (
  seq INTEGER PRIMARY KEY,
  group_id TEXT NOT NULL,
  member_id TEXT NOT NULL,
  role TEXT,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS installations (
  app TEXT NOT NULL,
  group_id TEXT NOT NULL,
  authorized_by TEXT NOT NULL,
  installed_at INTEGER NOT NULL,
  PRIMARY KEY (app, group_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS installation_history (
  seq INTEGER PRIMARY KEY,
  app TEXT NOT NULL,
  group_id TEXT NOT NULL,
  authorized_by TEXT,
  installed_at INTEGER,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS consents (
  app TEXT NOT NULL,
  member_id TEXT NOT NULL,
  scopes TEXT NOT NULL,
  PRIMARY KEY (app, member_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consent_history (
  seq INTEGER PRIMARY KEY,
  app TEXT NOT NULL,
  member_id TEXT NOT NULL,
  scopes TEXT,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_versions (
  version INTEGER PRIMARY KEY,
  text TEXT NOT NULL,
  author TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_approvals (
  version INTEGER NOT NULL REFERENCES policy_versions(version),
  approver TEXT NOT NULL,
  at INTEGER NOT NULL,
  PRIMARY KEY (version, approver)
);
CREATE TABLE IF NOT EXISTS policy_activations (
  seq INTEGER PRIMARY KEY,
  version INTEGER NOT NULL REFERENCES policy_versions(version),
  author TEXT NOT NULL,
  reason TEXT NOT NULL,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
  hash TEXT PRIMARY KEY,
  app TEXT NOT NULL,
  issued_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS tokens_by_app ON tokens(app);
-- Who made a key: another key (created_by_key), or a command run on the server
-- (created_by_command, by the OS user created_by_user). Stores from before keys recorded
-- their maker get these columns added when opened, before any migration runs
-- (`schema::columns_before_versioning`).
CREATE TABLE IF NOT EXISTS operator_keys (
  id TEXT PRIMARY KEY,
  hash TEXT NOT NULL,
  name TEXT NOT NULL,
  role TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER,
  created_by_key TEXT,
  created_by_command TEXT,
  created_by_user TEXT,
  expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS membership_history_by_key ON membership_history(group_id, member_id, at);
CREATE INDEX IF NOT EXISTS installation_history_by_key ON installation_history(app, group_id, at);
CREATE INDEX IF NOT EXISTS consent_history_by_key ON consent_history(app, member_id, at);
CREATE INDEX IF NOT EXISTS app_status_history_by_key ON app_status_history(app, at);
CREATE TABLE IF NOT EXISTS notifications (
  id INTEGER PRIMARY KEY,
  developer TEXT NOT NULL,
  event TEXT NOT NULL,
  payload TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  status TEXT NOT NULL,
  last_error TEXT
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(status, next_attempt_at);
CREATE TABLE IF NOT EXISTS cases (
  id INTEGER PRIMARY KEY,
  developer TEXT NOT NULL REFERENCES developers(id),
  state TEXT NOT NULL,
  manifest TEXT NOT NULL,
  deadline INTEGER NOT NULL,
  opened_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS case_events (
  seq INTEGER PRIMARY KEY,
  case_id INTEGER NOT NULL REFERENCES cases(id),
  state TEXT NOT NULL,
  at INTEGER NOT NULL,
  note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS certifications (
  seq INTEGER PRIMARY KEY,
  app TEXT NOT NULL REFERENCES apps(id),
  statement TEXT NOT NULL,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_proofs (
  seq INTEGER PRIMARY KEY,
  version INTEGER NOT NULL REFERENCES policy_versions(version),
  by TEXT NOT NULL,
  passed INTEGER NOT NULL,
  summary TEXT NOT NULL,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_waivers (
  seq INTEGER PRIMARY KEY,
  version INTEGER NOT NULL REFERENCES policy_versions(version),
  by TEXT NOT NULL,
  reason TEXT NOT NULL,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_previews (
  seq INTEGER PRIMARY KEY,
  version INTEGER NOT NULL REFERENCES policy_versions(version),
  by TEXT NOT NULL,
  summary TEXT NOT NULL,
  at INTEGER NOT NULL
);
