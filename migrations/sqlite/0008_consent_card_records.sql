-- The PHR card's own consent record beside each consent version (issue 6 deliverable 3,
-- docs/phr-card-profile.md §4, docs/kiosk.md). A consent committed with a PHR card carries the
-- record the card wrote (tag E1, signed by the holder key); My Number commits have none.
ALTER TABLE consent_versions ADD COLUMN card_record BLOB NULL;   -- the E1 bytes as the card wrote them
ALTER TABLE consent_versions ADD COLUMN card_version INTEGER NULL; -- the record's card-wide version

-- A card's versions only grow: one card version is never stored twice (anti-replay, beside the
-- check that a new record's version exceeds the card's last stored one).
CREATE UNIQUE INDEX consent_versions_card_record
    ON consent_versions(card_fingerprint, card_version) WHERE card_version IS NOT NULL;
