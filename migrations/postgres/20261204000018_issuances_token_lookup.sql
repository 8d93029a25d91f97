-- Token introspection finds a handed-out credential by the fingerprint of Google's token.
CREATE INDEX issuances_token ON issuances (token_sha256) WHERE token_sha256 IS NOT NULL;
-- A public client (such as the Cloud SDK's) names itself without proving it: kept apart
-- from `client_id`, which only an authenticated client or the token's `azp` fills.
ALTER TABLE issuances ADD COLUMN claimed_client TEXT;
