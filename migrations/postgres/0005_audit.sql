-- Audit log (issue 6, DESIGN §7, security-scenarios G): append-only, hash-chained entries and
-- signed checkpoints. entry_hash = SHA-256(prev_hash || canonical bytes), see docs/audit.md.
-- The chain head (last seq and entry_hash) lives in the one-row audit_head; every writer locks it
-- (SELECT … FOR UPDATE) in its write transaction, so several gateways keep one chain.
-- Times: ms since the Unix epoch.

CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    at_ms      BIGINT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id   TEXT NOT NULL,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    person_id  TEXT,
    resources  TEXT NOT NULL,
    purpose    TEXT,
    detail     TEXT,
    prev_hash  BYTEA NOT NULL,
    entry_hash BYTEA NOT NULL
);
CREATE INDEX audit_log_person ON audit_log(person_id, at_ms);

-- G2: the application cannot change or remove entries.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

CREATE TABLE audit_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    seq       BIGINT NOT NULL,
    head_hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, head_hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE audit_checkpoints (
    id        BIGSERIAL PRIMARY KEY,
    size      BIGINT NOT NULL,
    head_hash BYTEA NOT NULL,
    at_ms     BIGINT NOT NULL,
    key_id    BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    note      TEXT NOT NULL
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
