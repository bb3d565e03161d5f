-- Strongroom keystore: one row per key the HSM holds (or held).
-- Portable SQL: SQLite and PostgreSQL both run it unchanged. Times are Unix seconds.
CREATE TABLE keys (
    kid                   TEXT    PRIMARY KEY,
    purpose               TEXT    NOT NULL,
    alg                   TEXT    NOT NULL,
    generation            BIGINT  NOT NULL,
    created_at            BIGINT  NOT NULL,
    activates_at          BIGINT  NOT NULL,
    retired_at            BIGINT,
    compromised           BOOLEAN NOT NULL DEFAULT FALSE,
    destroyed_at          BIGINT,
    public_key_der        BLOB    NOT NULL,
    certificate_chain_pem TEXT,
    -- Two instances rotating the same purpose at once: one insert wins, the other is refused.
    UNIQUE (purpose, generation)
);
