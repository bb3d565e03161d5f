-- Strongroom server: clients, users and the short-lived artefacts of the protocol.
-- Portable SQL: SQLite and PostgreSQL both run it unchanged. Times are Unix seconds.
-- Bearer secrets (codes, refresh tokens, request_uri handles) are stored as the URL-safe base64
-- of their SHA-256, never in clear.

-- Registered clients; metadata is the serialized model::Client (RFC 7591 names).
CREATE TABLE clients (
    client_id   TEXT    PRIMARY KEY,
    metadata    TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

-- End users; password_hash is an argon2id PHC string; claims is a JSON object.
CREATE TABLE users (
    user_id       TEXT    PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    claims        TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL
);

-- RFC 9126 pushed authorization requests; single use by DELETE … RETURNING.
CREATE TABLE par_requests (
    request_uri_hash TEXT    PRIMARY KEY,
    client_id        TEXT    NOT NULL,
    params           TEXT    NOT NULL,
    expires_at       BIGINT  NOT NULL
);
CREATE INDEX par_requests_expires_at ON par_requests (expires_at);

-- Authorization codes; single use by UPDATE … SET used = TRUE WHERE used = FALSE RETURNING.
-- The row stays after use (until it expires and is purged) so that a second use is recognised
-- and the grant's tokens can be revoked (RFC 6749 §4.1.2).
CREATE TABLE authorization_codes (
    code_hash   TEXT    PRIMARY KEY,
    client_id   TEXT    NOT NULL,
    grant_id    TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    expires_at  BIGINT  NOT NULL,
    used        BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX authorization_codes_expires_at ON authorization_codes (expires_at);

-- Refresh tokens; rotation revokes the presented one and inserts its successor in one
-- transaction. A revoked token presented again is a replay.
CREATE TABLE refresh_tokens (
    token_hash  TEXT    PRIMARY KEY,
    grant_id    TEXT    NOT NULL,
    client_id   TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX refresh_tokens_grant_id ON refresh_tokens (grant_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

-- Access tokens (JWTs) by jti, for introspection and revocation; grant_id is NULL for
-- client_credentials tokens.
CREATE TABLE access_tokens (
    jti         TEXT    PRIMARY KEY,
    client_id   TEXT    NOT NULL,
    grant_id    TEXT,
    data        TEXT    NOT NULL,
    expires_at  BIGINT  NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX access_tokens_grant_id ON access_tokens (grant_id);
CREATE INDEX access_tokens_expires_at ON access_tokens (expires_at);

-- Client-assertion (private_key_jwt) jtis seen, until the assertion expires: a replay hits the
-- primary key (INSERT … ON CONFLICT DO NOTHING).
CREATE TABLE client_assertion_jtis (
    client_id   TEXT    NOT NULL,
    jti         TEXT    NOT NULL,
    expires_at  BIGINT  NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_assertion_jtis_expires_at ON client_assertion_jtis (expires_at);
