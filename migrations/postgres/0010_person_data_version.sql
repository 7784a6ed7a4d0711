-- A person's data version: bumped in the same transaction as every change to what their partner
-- reads can serve (an import touching a linked key, a key linked, an erasure). Partner
-- `$everything` reuses a Bundle assembled at the same version (gateway/src/domain/access.rs);
-- consent is still read on every request. Person rows are never deleted, so a version never
-- repeats for a person.
ALTER TABLE persons ADD COLUMN data_version BIGINT NOT NULL DEFAULT 0;
