"""Schemathesis hooks for the contract run against `sts-bridge dev`.

Loaded through SCHEMATHESIS_HOOKS by tests/contract/run.sh. Tokens come from the dev
issuer whose base URL is in STS_BRIDGE_DEV_ISSUER_URL (e.g. http://127.0.0.1:8081).

- /admin/v1/*: requests carry `Authorization: Bearer <token with sts:admin>`, except
  the cases schemathesis generates without credentials on purpose and one case in
  eight, which carries a valid token without the permission (403 insufficient_scope).
- POST /v1/token: a generated subject token is never a validly signed JWT, so it is
  refused with invalid_grant before anything behind token validation is reached. About
  half of the cases (chosen from a hash of the generated body, so the same seed picks
  the same cases) therefore get a valid dev token:
    * "token" variant: valid subject_token, its type, the grant type and audience
      `bigquery` (one time in four the generated audience is kept, for
      invalid_target); scope, options, resource and the rest stay as generated, so
      the checks behind token validation see generated values, and an invalid value
      that the server accepted would be reported by negative_data_rejection;
    * "exchange" variant: additionally allowed scope and userProject values (audience
      sometimes the dev provider resource) and no field that is refused on purpose
      (resource, actor_token, a second name for a field, random Basic credentials), so
      it is expected to succeed and exercises the 200 response and its headers; one in
      eight of these sends Basic client credentials, which the dev stack refuses with
      401 invalid_client and a WWW-Authenticate challenge.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import urllib.request

import schemathesis

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
TARGET = "bigquery"
PROVIDER = "//iam.googleapis.com/locations/global/workforcePools/dev-pool/providers/dev-auth0"
USER_PROJECT = "dev-project"
SCOPES = (
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/bigquery",
    "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/bigquery",
)
# Several subjects, so that both fresh exchanges and cache hits are seen.
SUBJECTS = ("contract|alice", "contract|bob", "contract|carol")
ADMIN_SUBJECT = "contract|admin"
USER_WITHOUT_ADMIN = "contract|nobody"
ADMIN_PERMISSION = "sts:admin"

# Google's camelCase names (JSON bodies) next to the form names.
ALIASES = {
    "grant_type": "grantType",
    "subject_token": "subjectToken",
    "subject_token_type": "subjectTokenType",
    "requested_token_type": "requestedTokenType",
}
# Fields that make an otherwise valid exchange fail on purpose.
REFUSED_FIELDS = ("resource", "actor_token", "actor_token_type")

# Re-mint a token when it has less than this left (dev tokens live for an hour).
MIN_REMAINING_SECS = 600


def _issuer_url() -> str:
    url = os.environ.get("STS_BRIDGE_DEV_ISSUER_URL")
    if not url:
        raise RuntimeError("STS_BRIDGE_DEV_ISSUER_URL is not set (base URL of the dev issuer)")
    return url.rstrip("/")


_tokens: dict[tuple[str, tuple[str, ...]], tuple[str, float]] = {}
_lock = threading.Lock()


def dev_token(sub: str, permissions: tuple[str, ...] = ()) -> str:
    """A token from the dev issuer, minted once and reused until close to expiry."""
    key = (sub, permissions)
    with _lock:
        cached = _tokens.get(key)
        if cached is not None and cached[1] - time.monotonic() > MIN_REMAINING_SECS:
            return cached[0]
        payload = json.dumps({"sub": sub, "permissions": list(permissions)}).encode()
        request = urllib.request.Request(
            _issuer_url() + "/dev/token",
            data=payload,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.load(response)
        token = body["access_token"]
        lifetime = float(body.get("expires_in", 3600))
        _tokens[key] = (token, time.monotonic() + lifetime)
        return token


@schemathesis.auth(retry_on=[], refresh_interval=None).apply_to(path_regex=r"^/admin/")
class AdminBearer:
    def get(self, case, context):
        # One case in eight carries a valid token without the admin permission, so the
        # 403 insufficient_scope answer is checked too.
        if _digest([case.method, case.path, case.path_parameters, case.query, case.body]) % 8 == 0:
            return dev_token(USER_WITHOUT_ADMIN)
        return dev_token(ADMIN_SUBJECT, (ADMIN_PERMISSION,))

    def set(self, case, data, context):
        case.headers["Authorization"] = f"Bearer {data}"


def _digest(value) -> int:
    text = json.dumps(value, sort_keys=True, default=_stable)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _stable(value) -> str:
    """A name for what JSON cannot hold that is the same on every run: the default repr of
    an object (schemathesis' NOT_SET body, for one) carries its memory address, and a
    digest of it would choose a different variant each run."""
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value))
    return f"<{type(value).__name__}>"


def _replace(body: dict, name: str, value: str) -> None:
    body.pop(ALIASES.get(name, ""), None)
    body[name] = value


@schemathesis.hook("map_case").apply_to(path="/v1/token", method="POST")
def valid_subject_token(context, case):
    if not isinstance(case.body, dict):
        return case
    digest = _digest(case.body)
    variant = digest % 4
    if variant < 2:
        return case
    body = dict(case.body)
    choice = digest >> 2
    _replace(body, "grant_type", GRANT_TYPE)
    _replace(body, "subject_token_type", JWT_TYPE)
    _replace(body, "subject_token", dev_token(SUBJECTS[choice % len(SUBJECTS)]))
    # The "token" variant keeps a generated audience one time in four (invalid_target).
    audience = body.get("audience")
    if variant == 3 or not isinstance(audience, str) or not audience or (choice >> 2) % 4:
        body["audience"] = TARGET
    if variant == 3:
        if (choice >> 4) % 4 == 0:
            body["audience"] = PROVIDER
        for name in REFUSED_FIELDS:
            body.pop(name, None)
        for name, alias in ALIASES.items():
            if name in body and alias in body:
                del body[alias]
        if "scope" in body:
            body["scope"] = SCOPES[(choice >> 6) % len(SCOPES)]
        if "options" in body:
            body["options"] = json.dumps({"userProject": USER_PROJECT})
        # Basic credentials are refused with 401 (the dev stack configures no client):
        # generated ones are dropped, and one exchange in eight sends some on purpose.
        if case.headers is not None and "Authorization" in case.headers:
            del case.headers["Authorization"]
        if (choice >> 8) % 8 == 0:
            credentials = base64.b64encode(b"contract-client:not-a-secret").decode()
            case.headers["Authorization"] = f"Basic {credentials}"
    case.body = body
    return case
