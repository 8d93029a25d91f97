-- The service account whose credential was handed out (impersonation) or that signed it
-- (Firebase custom tokens); `subject` still names the person, so the row names both.
ALTER TABLE issuances ADD COLUMN service_account TEXT;
-- Firebase custom tokens are signed, not exchanged: source `signing`.
ALTER TABLE issuances DROP CONSTRAINT issuances_source_check;
ALTER TABLE issuances ADD CONSTRAINT issuances_source_check
    CHECK (source IN ('sts', 'cache', 'impersonation', 'signing'));
