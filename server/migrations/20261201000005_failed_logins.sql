-- Failed sign-ins per interaction: the login step counts each password attempt here (one
-- UPDATE … SET failed_logins = failed_logins + 1 … RETURNING, before the password is checked,
-- so parallel posts cannot outrun the count) and deletes the interaction at the limit.
-- Counted per interaction, not per username: a per-username lockout would let anyone lock a
-- victim out by failing on purpose.
ALTER TABLE interactions ADD COLUMN failed_logins BIGINT NOT NULL DEFAULT 0;
