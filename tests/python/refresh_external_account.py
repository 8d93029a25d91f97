#!/usr/bin/env python3
"""Refresh a Google `external_account` credential the way data tools do.

Usage: refresh_external_account.py CREDENTIAL_FILE [SCOPE ...]

Prints one JSON line {"token": ..., "expiry": ...} on success; on failure
prints the error to stderr and exits 1. Uses identity_pool.Credentials
directly rather than google.auth.default(), which would also call Cloud
Resource Manager to look up the project.
"""
import json
import sys

import google.auth.transport.requests
from google.auth import identity_pool


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: refresh_external_account.py CREDENTIAL_FILE [SCOPE ...]",
              file=sys.stderr)
        return 2
    scopes = sys.argv[2:] or None  # the credential file itself carries no scopes
    try:
        with open(sys.argv[1], encoding="utf-8") as f:
            info = json.load(f)
        creds = identity_pool.Credentials.from_info(info, scopes=scopes)
        creds.refresh(google.auth.transport.requests.Request())
    except Exception as exc:  # report any failure as text, never a traceback
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({
        "token": creds.token,
        "expiry": creds.expiry.isoformat() if creds.expiry else None,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
