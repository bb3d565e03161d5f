-- Rich authorization requests (RFC 9396). Portable SQL (SQLite and PostgreSQL).

-- One row per approval of a set of authorization_details: by a user on the consent page, or by
-- a client for itself (client_credentials). `txn` is the transaction reference the access
-- tokens carry; `details_sha256` is the lowercase hex SHA-256 of the RFC 8785 canonical JSON of
-- the approved array (the details themselves live only in the tokens and the grant, not here).
-- The second_factor columns are for strong customer authentication: the factor that confirmed
-- the approval (e.g. "otp", "webauthn") and when; NULL until that step exists.
CREATE TABLE approvals (
    txn               TEXT    PRIMARY KEY,
    subject           TEXT    NOT NULL,
    subject_type      TEXT    NOT NULL,
    client_id         TEXT    NOT NULL,
    resource          TEXT    NOT NULL,
    details_sha256    TEXT    NOT NULL,
    approved_at       BIGINT  NOT NULL,
    second_factor     TEXT,
    second_factor_at  BIGINT
);
CREATE INDEX approvals_client ON approvals (client_id, approved_at);

-- Remembered consents are per API too (RFC 8707 resource; '' = this server's own endpoints):
-- approving `payments:write` for one API says nothing about another API's scope of that name.
CREATE TABLE consents_by_resource (
    user_id     TEXT    NOT NULL,
    client_id   TEXT    NOT NULL,
    resource    TEXT    NOT NULL,
    scope       TEXT    NOT NULL,
    granted_at  BIGINT  NOT NULL,
    PRIMARY KEY (user_id, client_id, resource)
);
INSERT INTO consents_by_resource (user_id, client_id, resource, scope, granted_at)
    SELECT user_id, client_id, '', scope, granted_at FROM consents;
DROP TABLE consents;
ALTER TABLE consents_by_resource RENAME TO consents;
