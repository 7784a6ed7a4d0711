-- Audit log (issue 6, DESIGN §7, security-scenarios G): append-only, hash-chained entries and
-- signed checkpoints. entry_hash = SHA-256(prev_hash || canonical bytes), see docs/audit.md.
-- The chain head (last seq and entry_hash) lives in the one-row audit_head, read and written in
-- the same write transaction as the entries (BEGIN IMMEDIATE). Times: ms since the Unix epoch.

CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    at_ms      INTEGER NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id   TEXT NOT NULL,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    person_id  TEXT,
    resources  TEXT NOT NULL,
    purpose    TEXT,
    detail     TEXT,
    prev_hash  BLOB NOT NULL,
    entry_hash BLOB NOT NULL
);
CREATE INDEX audit_log_person ON audit_log(person_id, at_ms);

-- G2: the application cannot change or remove entries.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TABLE audit_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    seq       INTEGER NOT NULL,
    head_hash BLOB NOT NULL
);
INSERT INTO audit_head (id, seq, head_hash) VALUES (1, 0, zeroblob(32));

CREATE TABLE audit_checkpoints (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    size      INTEGER NOT NULL,
    head_hash BLOB NOT NULL,
    at_ms     INTEGER NOT NULL,
    key_id    BLOB NOT NULL,
    signature BLOB NOT NULL,
    note      TEXT NOT NULL
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;
