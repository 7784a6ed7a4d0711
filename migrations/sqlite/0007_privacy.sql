-- Erasure and export (security-scenarios K1/K2, PHR guideline 消去 and 相互運用性; docs/privacy.md).
-- Times: ms since the Unix epoch.

-- The erasure document waiting for the card lives in consent_pending (one document per session
-- waits for a card signature, whatever it is).

-- One committed erasure: what was removed (counts only), the document the card signed, and when
-- the backups that may still hold the data must have been purged.
CREATE TABLE erasures (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id           TEXT NOT NULL REFERENCES persons(id),
    erased_at_ms        INTEGER NOT NULL,
    backup_purge_due_ms INTEGER NOT NULL,
    backup_purged_at_ms INTEGER NULL,            -- set by `iphr-gateway purge-due --mark-purged`
    resources           INTEGER NOT NULL DEFAULT 0,
    person_keys         INTEGER NOT NULL DEFAULT 0,
    consents_revoked    INTEGER NOT NULL DEFAULT 0,
    source_links        INTEGER NOT NULL DEFAULT 0,
    document            TEXT NOT NULL,           -- canonical JSON the card signed (by its hash)
    token               TEXT NOT NULL,           -- the card token (certificate + signature)
    card_fingerprint    BLOB NOT NULL
);
CREATE INDEX erasures_person ON erasures(person_id);
CREATE INDEX erasures_due ON erasures(backup_purge_due_ms);
