-- A revocation names the issuer as well as the subject: `auth0|123` of one tenant is not
-- `auth0|123` of another. Revocations made before hold for every issuer (issuer '').
-- SQLite cannot change a primary key in place, so the table is rebuilt.
CREATE TABLE revocations_by_issuer (
    issuer        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    revoked_until TEXT NOT NULL,
    reason        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
INSERT INTO revocations_by_issuer (issuer, subject, revoked_until, reason, created_at, created_by)
    SELECT '', subject, revoked_until, reason, created_at, created_by FROM revocations;
DROP TABLE revocations;
ALTER TABLE revocations_by_issuer RENAME TO revocations;
