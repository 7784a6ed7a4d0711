-- Partner OAuth (issue 6, DESIGN §6, RFC 7523 / RFC 8705): used client-assertion ids (single use
-- until the assertion expires) and issued access tokens, stored only as their SHA-256 and bound
-- to the SHA-256 of the client certificate of the token request. Times: ms since the Unix epoch.

CREATE TABLE partner_assertion_jtis (
    client_id     TEXT NOT NULL,
    jti           TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX partner_assertion_jtis_expiry ON partner_assertion_jtis(expires_at_ms);

CREATE TABLE partner_access_tokens (
    token_hash         BYTEA PRIMARY KEY,
    client_id          TEXT NOT NULL,
    certificate_sha256 BYTEA NOT NULL,
    scope              TEXT NOT NULL,
    issued_at_ms       BIGINT NOT NULL,
    expires_at_ms      BIGINT NOT NULL
);
CREATE INDEX partner_access_tokens_expiry ON partner_access_tokens(expires_at_ms);
CREATE INDEX partner_access_tokens_client ON partner_access_tokens(client_id);
