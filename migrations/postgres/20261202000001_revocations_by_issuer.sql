-- A revocation names the issuer as well as the subject: `auth0|123` of one tenant is not
-- `auth0|123` of another. Revocations made before hold for every issuer (issuer '').
ALTER TABLE revocations ADD COLUMN issuer TEXT NOT NULL DEFAULT '';
ALTER TABLE revocations ALTER COLUMN issuer DROP DEFAULT;
ALTER TABLE revocations DROP CONSTRAINT revocations_pkey;
ALTER TABLE revocations ADD PRIMARY KEY (issuer, subject);
