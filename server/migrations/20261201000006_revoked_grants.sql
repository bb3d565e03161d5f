-- Grants revoked because a code or refresh token was replayed (or by RFC 7009 revocation).
-- Tokens of a grant are written only while the grant is not listed here (INSERT … SELECT …
-- WHERE NOT EXISTS), so a replay detected while the first redemption is still signing its
-- tokens still wins: what that redemption writes afterwards is refused, not left live.
-- A row goes when nothing of its grant is left in the database (see Store::purge_expired).
CREATE TABLE revoked_grants (
    grant_id    TEXT    PRIMARY KEY
);

-- revoke_grant finds a grant's codes by grant_id.
CREATE INDEX authorization_codes_grant_id ON authorization_codes (grant_id);
