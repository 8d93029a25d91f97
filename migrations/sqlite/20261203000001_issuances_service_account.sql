-- The service account whose credential was handed out (impersonation and Firebase
-- signing); `subject` still names the person, so the row names both.
ALTER TABLE issuances ADD COLUMN service_account TEXT;
