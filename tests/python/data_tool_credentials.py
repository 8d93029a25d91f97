#!/usr/bin/env python3
"""Obtain Google credentials the way a data tool does, and refresh them once.

Usage: data_tool_credentials.py default
       data_tool_credentials.py file CREDENTIAL_FILE

`default` is google.auth.default() (with GCE_METADATA_HOST / GCE_METADATA_IP pointing at a
metadata server); `file` is google.auth.load_credentials_from_file(). Prints one JSON line
{"token", "project", "kind", "email"}; on failure prints the error to stderr and exits 1.
"""
import json
import sys

import google.auth
import google.auth.transport.requests


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("default", "file"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if sys.argv[1] == "default":
            creds, project = google.auth.default()
        else:
            creds, project = google.auth.load_credentials_from_file(sys.argv[2])
        creds.refresh(google.auth.transport.requests.Request())
    except Exception as exc:  # report any failure as text, never a traceback
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({
        "token": creds.token,
        "project": project,
        "kind": f"{type(creds).__module__}.{type(creds).__name__}",
        "email": getattr(creds, "service_account_email", None),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
