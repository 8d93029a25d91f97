-- `client_id` holds the client that authenticated with HTTP Basic when one did; `azp`
-- always holds the subject token's own `azp` / `client_id`, so both are on record.
ALTER TABLE issuances ADD COLUMN azp TEXT;
