-- One row per credential handed out (fresh or cached) and per refusal of a validly
-- signed token. Never the token itself: only the SHA-256 fingerprint of Google's token.
-- Times are RFC 3339 text in UTC, which sorts in time order.
CREATE TABLE issuances (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    issued_at        TEXT NOT NULL,
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
    expires_at       TEXT,
    token_sha256     TEXT,
    client_addr      TEXT,
    user_agent       TEXT,
    api_client       TEXT
);
CREATE INDEX issuances_subject_time ON issuances (subject, issued_at);
CREATE INDEX issuances_time ON issuances (issued_at);

CREATE TABLE revocations (
    subject       TEXT PRIMARY KEY,
    revoked_until TEXT NOT NULL,
    reason        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL
);

CREATE TABLE admin_actions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    request_id TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT,
    detail     TEXT NOT NULL
);
CREATE INDEX admin_actions_time ON admin_actions (at);
