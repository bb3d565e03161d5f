-- The front channel: interactions (one browser's walk through login and consent for one
-- authorization request), login sessions, and remembered consents.
-- Portable SQL (SQLite and PostgreSQL); times are Unix seconds; bearer handles (the cookie
-- values) are stored as the URL-safe base64 of their SHA-256.

-- An authorization request between /authorize and the code: the validated request (JSON), the
-- CSRF token the pages embed, and, once the user has signed in, who and how. Single use: the
-- consent step takes it with DELETE … RETURNING.
CREATE TABLE interactions (
    id_hash     TEXT    PRIMARY KEY,
    client_id   TEXT    NOT NULL,
    request     TEXT    NOT NULL,
    csrf        TEXT    NOT NULL,
    user_id     TEXT,
    auth_time   BIGINT,
    acr         TEXT,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX interactions_expires_at ON interactions (expires_at);

-- A browser's signed-in user (cookie __Host-strongroom-session), so a second authorization
-- request within the session lifetime skips the login page.
CREATE TABLE login_sessions (
    id_hash     TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL,
    auth_time   BIGINT  NOT NULL,
    acr         TEXT    NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX login_sessions_expires_at ON login_sessions (expires_at);

-- The scopes a user has granted a client (space-separated), remembered so the consent page is
-- not shown again for the same scopes. Consents do not expire.
CREATE TABLE consents (
    user_id     TEXT    NOT NULL,
    client_id   TEXT    NOT NULL,
    scope       TEXT    NOT NULL,
    granted_at  BIGINT  NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
