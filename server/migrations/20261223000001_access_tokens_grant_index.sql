-- Access tokens by grant: only the tokens of a user's grant have one. client_credentials tokens
-- (grant_id NULL) were entries in this index too, one more B-tree page for every commit of the
-- token endpoint's hottest path, for rows no query looks up by grant. Every lookup says
-- `grant_id = …`, which implies IS NOT NULL, so SQLite and PostgreSQL both use the partial
-- index for it. Portable SQL (SQLite and PostgreSQL).
DROP INDEX access_tokens_grant_id;
CREATE INDEX access_tokens_grant_id ON access_tokens (grant_id) WHERE grant_id IS NOT NULL;
