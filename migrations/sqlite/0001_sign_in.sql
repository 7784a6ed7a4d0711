-- Card sign-in (issue 3, DESIGN §4): persons, card bindings, browser sessions, challenge nonces,
-- sign-in attempts. Times are milliseconds since the Unix epoch; hashes are SHA-256.

CREATE TABLE persons (
    id            TEXT PRIMARY KEY,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE card_bindings (
    cert_fingerprint BLOB PRIMARY KEY,          -- SHA-256 of the certificate DER
    person_id        TEXT NOT NULL REFERENCES persons(id),
    card_type        TEXT NOT NULL,             -- 'jpki' | 'phr'
    subject          TEXT NOT NULL,
    issuer           TEXT NOT NULL,
    serial_hex       TEXT NOT NULL,
    not_before_ms    INTEGER NOT NULL,
    not_after_ms     INTEGER NOT NULL,
    created_at_ms    INTEGER NOT NULL,
    linked_from      BLOB NULL                  -- fingerprint of the certificate present at linking
);
CREATE INDEX card_bindings_person ON card_bindings(person_id);

CREATE TABLE sessions (
    id_hash             BLOB PRIMARY KEY,       -- SHA-256 of the session id; the id itself is never stored
    person_id           TEXT NULL REFERENCES persons(id),
    card_fingerprint    BLOB NULL,
    created_at_ms       INTEGER NOT NULL,
    last_seen_ms        INTEGER NOT NULL,
    authenticated_at_ms INTEGER NULL
);
CREATE INDEX sessions_last_seen ON sessions(last_seen_ms);

CREATE TABLE nonces (
    nonce         TEXT PRIMARY KEY,             -- base64 of 32 random bytes
    session_hash  BLOB NOT NULL,
    purpose       TEXT NOT NULL,                -- 'login' | 'link' (later: consent changes)
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX nonces_session ON nonces(session_hash, purpose);
CREATE INDEX nonces_expiry ON nonces(expires_at_ms);

CREATE TABLE auth_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms            INTEGER NOT NULL,
    outcome          TEXT NOT NULL,             -- 'success' | 'failure'
    reason           TEXT NOT NULL,
    card_type        TEXT NULL,
    cert_fingerprint BLOB NULL,
    person_id        TEXT NULL,
    device           TEXT NULL
);
