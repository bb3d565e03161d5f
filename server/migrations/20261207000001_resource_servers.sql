-- APIs as resource servers (RFC 8707 resources). Portable SQL (SQLite and PostgreSQL).

-- Registered APIs: the serialized resource_server::ResourceServer under its identifier (the
-- `aud` of its tokens, which never changes once registered).
CREATE TABLE resource_servers (
    identifier  TEXT    PRIMARY KEY,
    metadata    TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

-- An access token issued for a registered API names it, so that deleting the API revokes its
-- tokens at once. NULL for tokens for the server's own endpoints.
ALTER TABLE access_tokens ADD COLUMN resource TEXT;
CREATE INDEX access_tokens_resource ON access_tokens (resource) WHERE resource IS NOT NULL;

-- A JWE access token (encrypted to its API's key) cannot be read by the server: introspection
-- and revocation find its record by the URL-safe base64 SHA-256 of the token string. NULL for
-- signed-only tokens, which are found by their jti.
ALTER TABLE access_tokens ADD COLUMN token_hash TEXT;
CREATE UNIQUE INDEX access_tokens_token_hash ON access_tokens (token_hash)
    WHERE token_hash IS NOT NULL;
