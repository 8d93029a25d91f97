#!/usr/bin/env python3
"""Verify a Firebase custom token the way Firebase Authentication does.

Usage: verify_firebase_token.py EXPECTATIONS_FILE

EXPECTATIONS_FILE is JSON: {"token", "kid", "public_key_pem", "service_account",
"uid", "claims"}. The signature, `aud`, `iat` and `exp` are checked by
google-auth's JWT verification against the signing key; the rest against the
expectations and Firebase's documented rules. Prints the verified payload as one
JSON line; on failure prints the reason to stderr and exits 1.
"""
import json
import sys

from google.auth import jwt

AUDIENCE = ("https://identitytoolkit.googleapis.com/"
            "google.identity.identitytoolkit.v1.IdentityToolkit")
RESERVED = {"acr", "amr", "at_hash", "aud", "auth_time", "azp", "cnf", "c_hash",
            "exp", "firebase", "iat", "iss", "jti", "nbf", "nonce", "sub"}


def check(expect: dict) -> dict:
    token = expect["token"]
    header = jwt.decode_header(token)
    if header.get("alg") != "RS256":
        raise ValueError(f"alg {header.get('alg')} is not RS256")
    if header.get("kid") != expect["kid"]:
        raise ValueError(f"kid {header.get('kid')} is not the signing key's")
    payload = jwt.decode(token, certs={expect["kid"]: expect["public_key_pem"]},
                         audience=AUDIENCE, clock_skew_in_seconds=0)
    for field in ("iss", "sub"):
        if payload.get(field) != expect["service_account"]:
            raise ValueError(f"{field} {payload.get(field)} is not the service account")
    uid = payload.get("uid")
    if not isinstance(uid, str) or not 1 <= len(uid) <= 128:
        raise ValueError(f"uid {uid!r} is not 1-128 characters")
    if uid != expect["uid"]:
        raise ValueError(f"uid {uid} is not {expect['uid']}")
    lifetime = payload["exp"] - payload["iat"]
    if not 0 < lifetime <= 3600:
        raise ValueError(f"lifetime {lifetime} s is not within an hour")
    claims = payload.get("claims", {})
    if RESERVED & set(claims):
        raise ValueError(f"reserved claims {sorted(RESERVED & set(claims))}")
    if len(json.dumps(claims, separators=(",", ":"))) > 1000:
        raise ValueError("claims larger than 1000 bytes")
    if claims != expect["claims"]:
        raise ValueError(f"claims {claims} are not {expect['claims']}")
    return payload


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: verify_firebase_token.py EXPECTATIONS_FILE", file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1], encoding="utf-8") as f:
            payload = check(json.load(f))
    except Exception as exc:  # report any failure as text, never a traceback
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
