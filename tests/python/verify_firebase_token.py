#!/usr/bin/env python3
"""Verify a Firebase custom token the way Firebase Authentication does.

Usage: verify_firebase_token.py EXPECTATIONS_FILE

EXPECTATIONS_FILE is JSON: {"token", "kid", "public_key_pem", "service_account",
"uid", "claims"}. The signature, `aud`, `iat` and `exp` are checked by
google-auth's JWT verification against the signing key's public certificate,
in the form Google publishes for a service account ({kid: X.509 PEM}); the
rest against the expectations and Firebase's documented rules. Prints the verified payload as one
JSON line; on failure prints the reason to stderr and exits 1.
"""
import datetime
import json
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import jwt

AUDIENCE = ("https://identitytoolkit.googleapis.com/"
            "google.identity.identitytoolkit.v1.IdentityToolkit")
RESERVED = {"acr", "amr", "at_hash", "aud", "auth_time", "azp", "cnf", "c_hash",
            "exp", "firebase", "iat", "iss", "jti", "nbf", "nonce", "sub"}


def public_certificate(public_key_pem: str, service_account: str) -> str:
    """An X.509 certificate of the signing key, named after the service account.

    Google serves these for every service account; here the private key may live in
    the IAM Credentials stand-in, so a throwaway issuer signs the certificate. Only
    the public key inside it verifies the token, as with Google's own."""
    key = serialization.load_pem_public_key(public_key_pem.encode())
    issuer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service_account)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(issuer, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def check(expect: dict) -> dict:
    token = expect["token"]
    header = jwt.decode_header(token)
    if header.get("alg") != "RS256":
        raise ValueError(f"alg {header.get('alg')} is not RS256")
    if header.get("kid") != expect["kid"]:
        raise ValueError(f"kid {header.get('kid')} is not the signing key's")
    certificate = public_certificate(expect["public_key_pem"], expect["service_account"])
    payload = jwt.decode(token, certs={expect["kid"]: certificate},
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
