-- Partner `$everything` reads a person's resources through this index in (category, type, id)
-- order without a sort (gateway/src/store/records.rs `everything_rows`); searches by type keep
-- their prefix.
DROP INDEX iphr_resources_person;
CREATE INDEX iphr_resources_person ON iphr_resources(person_key, category, resource_type, id);
