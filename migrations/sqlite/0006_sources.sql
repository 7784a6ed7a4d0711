-- Pulls from sources with a card-signed grant (issue 7, docs/source-protocol.md §7). Times: ms
-- since the Unix epoch.

-- One person linked at one source: the pseudonym, the card credential the source registered, the
-- current grant, where the last pull stopped, and a lease so that several gateways on one
-- database never pull the same pair at once.
CREATE TABLE source_links (
    person_id           TEXT NOT NULL REFERENCES persons(id),
    source_id           TEXT NOT NULL REFERENCES services(id),
    pseudonym           TEXT NOT NULL,
    credential_type     TEXT NOT NULL,          -- 'phr' | 'jpki'
    holder_certificate  BLOB NULL,              -- PHR card slot 9A certificate (DER)
    binding_certificate BLOB NOT NULL,          -- service-binding certificate (DER; JPKI: the auth certificate)
    linked_at_ms        INTEGER NOT NULL,
    grant_bytes         BLOB NULL,              -- canonical grant TLV (tag E2)
    grant_signature     BLOB NULL,
    grant_alg           TEXT NULL,              -- 'p256' | 'jpki'
    grant_expires_ms    INTEGER NULL,
    list_cursor         TEXT NULL,              -- the source's next_cursor past the stored files
    last_pull_ms        INTEGER NULL,
    last_outcome        TEXT NULL,              -- 'ok' | 'partial' | 'failed' | 'refused'
    last_error          TEXT NULL,
    lease_owner         TEXT NULL,
    lease_until_ms      INTEGER NULL,
    PRIMARY KEY (person_id, source_id),
    UNIQUE (source_id, pseudonym)
);
CREATE INDEX source_links_due ON source_links(source_id, grant_expires_ms);

-- Nonces a source issued for a grant being signed at a kiosk (5 minutes, single use).
CREATE TABLE source_nonces (
    nonce         TEXT PRIMARY KEY,             -- base64url of the 32 bytes
    source_id     TEXT NOT NULL,
    person_id     TEXT NOT NULL,
    session_hash  BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
