-- `request_id` is the caller's `X-Request-Id` when it sent one, which anyone can repeat;
-- the id the server generated for the request is kept beside it, unique per request.
ALTER TABLE issuances ADD COLUMN server_request_id TEXT;
