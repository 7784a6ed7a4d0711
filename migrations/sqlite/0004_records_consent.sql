-- Records, services and consent (issue 6, DESIGN §5–§7). Times: ms since the Unix epoch.

-- Sources and partners (and OH staff tools), each with its registered client certificate and keys.
CREATE TABLE services (
    id                 TEXT PRIMARY KEY,
    kind               TEXT NOT NULL,            -- 'partner' | 'source'
    name               TEXT NOT NULL,            -- shown to the worker (Japanese)
    purpose            TEXT NOT NULL,            -- 利用目的, shown to the worker
    categories         TEXT NOT NULL,            -- JSON array of requested data categories
    period_days        INTEGER NOT NULL,         -- requested consent period
    certificate_sha256 BLOB NULL,                -- the mTLS client certificate
    jwks               TEXT NULL,                -- JWK Set of private_key_jwt keys (partners)
    scopes             TEXT NOT NULL DEFAULT '', -- space separated
    rate_per_sec       INTEGER NOT NULL DEFAULT 100,
    created_at_ms      INTEGER NOT NULL
);

-- The identity of a person at a source (e.g. 保険者番号:記号:番号:枝番), linked to a person when known.
CREATE TABLE person_keys (
    person_key    TEXT PRIMARY KEY,
    person_id     TEXT NULL REFERENCES persons(id),
    patient_id    TEXT NOT NULL,               -- the converter's Patient id for this key
    linked_at_ms  INTEGER NULL
);
CREATE INDEX person_keys_person ON person_keys(person_id);

-- One imported file; its bytes' SHA-256 makes re-import a no-op.
CREATE TABLE imports (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    content_sha256 BLOB NOT NULL UNIQUE,
    source_id      TEXT NULL,
    file_name      TEXT NOT NULL,
    format         TEXT NOT NULL,
    records        INTEGER NOT NULL,
    resources      INTEGER NOT NULL,
    imported_at_ms INTEGER NOT NULL
);

-- FHIR resources of the iPHR, rendered at import; served as stored, within consent.
CREATE TABLE iphr_resources (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    person_key    TEXT NOT NULL,
    category      TEXT NOT NULL,                 -- data category (unit A/B/C and kind)
    fhir_category TEXT NULL,                     -- code of the first FHIR category (laboratory …)
    code          TEXT NULL,                     -- system|code of the main coding
    effective     TEXT NULL,                     -- YYYY-MM-DD
    import_id     INTEGER NOT NULL REFERENCES imports(id),
    json          TEXT NOT NULL,
    PRIMARY KEY (resource_type, id, person_key)
);
CREATE INDEX iphr_resources_person ON iphr_resources(person_key, category, resource_type);

-- Consent documents, every version kept; the card's signature covers the document.
CREATE TABLE consent_versions (
    person_id        TEXT NOT NULL REFERENCES persons(id),
    service_id       TEXT NOT NULL REFERENCES services(id),
    version          INTEGER NOT NULL,
    action           TEXT NOT NULL,               -- 'grant' | 'revoke'
    categories       TEXT NOT NULL,               -- JSON array
    period_start_ms  INTEGER NOT NULL,
    period_end_ms    INTEGER NOT NULL,
    document         TEXT NOT NULL,               -- canonical JSON the card signed (by its hash)
    token            TEXT NOT NULL,               -- the card token (certificate + signature)
    card_fingerprint BLOB NOT NULL,
    committed_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (person_id, service_id, version)
);

-- The current consent of each (person, service): what every request is checked against.
CREATE TABLE consent_heads (
    person_id       TEXT NOT NULL REFERENCES persons(id),
    service_id      TEXT NOT NULL REFERENCES services(id),
    version         INTEGER NOT NULL,
    status          TEXT NOT NULL,                -- 'permit' | 'deny'
    categories      TEXT NOT NULL,
    period_start_ms INTEGER NOT NULL,
    period_end_ms   INTEGER NOT NULL,
    PRIMARY KEY (person_id, service_id)
);
CREATE INDEX consent_heads_service ON consent_heads(service_id, status);

-- A consent change waiting for the card's signature; its hash is the challenge nonce.
CREATE TABLE consent_pending (
    nonce         TEXT PRIMARY KEY,
    session_hash  BLOB NOT NULL,
    document      TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
