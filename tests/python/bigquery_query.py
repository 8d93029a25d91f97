#!/usr/bin/env python3
"""Run small queries with the real google-cloud-bigquery client, as a data tool would.

Usage: bigquery_query.py API_ENDPOINT default
       bigquery_query.py API_ENDPOINT file CREDENTIAL_FILE PROJECT

`default` lets the client find its credentials and project itself, through
google.auth.default() (with GCE_METADATA_HOST / GCE_METADATA_IP pointing at a metadata
server, and GOOGLE_CLOUD_QUOTA_PROJECT naming a quota project if one is wanted); `file`
uses an `external_account` credential file whose token_url is sts-bridge.

Runs SELECT SESSION_USER() through jobs.query (query_and_wait) and SELECT 1 through
jobs.insert (query().result()). Prints one JSON line {"session_user", "one", "project"}
on success; on failure prints the error to stderr and exits 1.
"""
import json
import sys

from google.api_core.client_options import ClientOptions
from google.auth import identity_pool
from google.cloud import bigquery

SCOPES = ["https://www.googleapis.com/auth/bigquery"]


def client(argv):
    endpoint, mode, rest = argv[0], argv[1], argv[2:]
    options = ClientOptions(api_endpoint=endpoint)
    if mode == "default" and not rest:
        return bigquery.Client(client_options=options)
    if mode == "file" and len(rest) == 2:
        path, project = rest
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        credentials = identity_pool.Credentials.from_info(info, scopes=SCOPES)
        return bigquery.Client(project=project, credentials=credentials,
                               client_options=options)
    return None


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        bq = client(sys.argv[1:])
        if bq is None:
            print(__doc__, file=sys.stderr)
            return 2
        session_user = list(bq.query_and_wait("SELECT SESSION_USER()"))[0][0]
        one = list(bq.query("SELECT 1").result())[0][0]
    except Exception as exc:  # report any failure as text, never a traceback
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"session_user": session_user, "one": one, "project": bq.project}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
