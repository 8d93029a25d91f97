-- One row per credential handed out (fresh or cached) and per refusal of a validly
-- signed token. Never the token itself: only the SHA-256 fingerprint of Google's token.
CREATE TABLE issuances (
    id               BIGSERIAL PRIMARY KEY,
    issued_at        TIMESTAMPTZ NOT NULL,
    request_id       TEXT NOT NULL,
    issuer           TEXT NOT NULL,
    subject          TEXT NOT NULL,
    client_id        TEXT,
    actor            TEXT,
    target           TEXT NOT NULL,
    google_principal TEXT,
    scopes           TEXT NOT NULL,
    source           TEXT CHECK (source IN ('sts', 'cache', 'impersonation')),
    outcome          TEXT NOT NULL CHECK (outcome IN ('issued', 'refused')),
    error_code       TEXT,
    expires_at       TIMESTAMPTZ,
    token_sha256     TEXT,
    client_addr      TEXT,
    user_agent       TEXT,
    api_client       TEXT
);
CREATE INDEX issuances_subject_time ON issuances (subject, issued_at);
CREATE INDEX issuances_time ON issuances (issued_at);

-- A revoked subject is refused until `revoked_until`.
CREATE TABLE revocations (
    subject       TEXT PRIMARY KEY,
    revoked_until TIMESTAMPTZ NOT NULL,
    reason        TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    created_by    TEXT NOT NULL
);

-- What administrators did through the admin API.
CREATE TABLE admin_actions (
    id         BIGSERIAL PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    request_id TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT,
    detail     TEXT NOT NULL
);
CREATE INDEX admin_actions_time ON admin_actions (at);
