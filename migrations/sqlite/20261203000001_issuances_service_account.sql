-- The service account whose credential was handed out (impersonation) or that signed it
-- (Firebase custom tokens); `subject` still names the person, so the row names both.
-- Firebase custom tokens are signed, not exchanged: source `signing`. SQLite cannot change
-- a CHECK constraint in place, so the table is rebuilt.
CREATE TABLE issuances_next (
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
    source           TEXT CHECK (source IN ('sts', 'cache', 'impersonation', 'signing')),
    outcome          TEXT NOT NULL CHECK (outcome IN ('issued', 'refused')),
    error_code       TEXT,
    expires_at       TEXT,
    token_sha256     TEXT,
    client_addr      TEXT,
    user_agent       TEXT,
    api_client       TEXT,
    azp              TEXT,
    server_request_id TEXT,
    service_account  TEXT
);
INSERT INTO issuances_next (id, issued_at, request_id, issuer, subject, client_id, actor,
        target, google_principal, scopes, source, outcome, error_code, expires_at,
        token_sha256, client_addr, user_agent, api_client, azp, server_request_id)
    SELECT id, issued_at, request_id, issuer, subject, client_id, actor, target,
        google_principal, scopes, source, outcome, error_code, expires_at, token_sha256,
        client_addr, user_agent, api_client, azp, server_request_id
    FROM issuances;
DROP TABLE issuances;
ALTER TABLE issuances_next RENAME TO issuances;
CREATE INDEX issuances_subject_time ON issuances (subject, issued_at);
CREATE INDEX issuances_time ON issuances (issued_at);
