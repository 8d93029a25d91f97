#!/usr/bin/env python3
"""Run small queries with the real google-cloud-bigquery client, as a data tool would,
through an `external_account` credential file whose token_url is sts-bridge.

Usage: bigquery_query.py CREDENTIAL_FILE API_ENDPOINT PROJECT

Runs SELECT SESSION_USER() through jobs.query (query_and_wait) and SELECT 1 through
jobs.insert (query().result()). Prints one JSON line {"session_user": ..., "one": ...}
on success; on failure prints the error to stderr and exits 1.
"""
import json
import sys

from google.api_core.client_options import ClientOptions
from google.auth import identity_pool
from google.cloud import bigquery

SCOPES = ["https://www.googleapis.com/auth/bigquery"]


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: bigquery_query.py CREDENTIAL_FILE API_ENDPOINT PROJECT",
              file=sys.stderr)
        return 2
    path, endpoint, project = sys.argv[1:]
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        credentials = identity_pool.Credentials.from_info(info, scopes=SCOPES)
        client = bigquery.Client(
            project=project,
            credentials=credentials,
            client_options=ClientOptions(api_endpoint=endpoint),
        )
        session_user = list(client.query_and_wait("SELECT SESSION_USER()"))[0][0]
        one = list(client.query("SELECT 1").result())[0][0]
    except Exception as exc:  # report any failure as text, never a traceback
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"session_user": session_user, "one": one}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
