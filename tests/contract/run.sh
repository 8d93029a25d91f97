#!/usr/bin/env bash
# Contract test: schemathesis against `sts-bridge dev`, checked against openapi.yaml.
#
#   bash tests/contract/run.sh BINARY VENV_PYTHON
#
# BINARY is a built sts-bridge; VENV_PYTHON a Python with tests/contract/requirements.txt
# installed. Starts the dev stack on free loopback ports with a temporary --dir, waits for
# /readyz, runs schemathesis with tests/contract/hooks.py (valid dev tokens for the success
# path and the admin API), always stops the server, and exits with schemathesis' status.
#
# Tunables (environment): CONTRACT_MAX_EXAMPLES (default 300), CONTRACT_SEED (default 1),
# CONTRACT_WORKERS (default 1), CONTRACT_REPORT_DIR (write the JSON/JUnit reports and the
# server log there; without it no report is written), CONTRACT_ARGS (more schemathesis options,
# split on spaces, e.g. "--report har --report-har-path /tmp/cases.har").
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 BINARY VENV_PYTHON" >&2
    exit 2
fi
BINARY=$1
PYTHON=$2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SPEC=$ROOT/openapi.yaml
MAX_EXAMPLES=${CONTRACT_MAX_EXAMPLES:-300}
SEED=${CONTRACT_SEED:-1}
# One worker: cases then run in a fixed order, and Python 3.11's ast module (which
# hypothesis uses to describe strategies) is not safe across threads.
WORKERS=${CONTRACT_WORKERS:-1}

[ -x "$BINARY" ] || { echo "contract: $BINARY is not an executable" >&2; exit 2; }
if ! "$PYTHON" -c 'import schemathesis' 2>/dev/null; then
    echo "contract: $PYTHON has no schemathesis;" \
        "install tests/contract/requirements.txt into its environment" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sts-contract.XXXXXX")
# Reports only where they are kept: a path into the temporary folder would be stale by
# the time anyone reads it.
REPORTS=${CONTRACT_REPORT_DIR:-}
REPORT_ARGS=()
if [ -n "$REPORTS" ]; then
    mkdir -p "$REPORTS"
    rm -f "$REPORTS/schemathesis.json"
    REPORT_ARGS=(--report json,junit
        --report-json-path "$REPORTS/schemathesis.json"
        --report-junit-path "$REPORTS/junit.xml")
    SERVER_LOG=$REPORTS/server.log
else
    SERVER_LOG=$WORK/server.log
fi
SERVER_PID=

cleanup() {
    local status=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Three free loopback ports (the OS picks them; closed again just before the server binds).
read -r SERVICE_PORT ISSUER_PORT GOOGLE_PORT < <("$PYTHON" - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)
SERVICE_URL=http://127.0.0.1:$SERVICE_PORT
ISSUER_URL=http://127.0.0.1:$ISSUER_PORT

NO_COLOR=1 "$BINARY" dev \
    --listen "127.0.0.1:$SERVICE_PORT" \
    --issuer-listen "127.0.0.1:$ISSUER_PORT" \
    --google-listen "127.0.0.1:$GOOGLE_PORT" \
    --dir "$WORK/dev" >"$SERVER_LOG" 2>&1 </dev/null &
SERVER_PID=$!

# Wait for /readyz (at most 60 s), giving up early if the server died.
if ! "$PYTHON" - "$SERVICE_URL/readyz" "$SERVER_PID" <<'EOF'
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("contract: the server exited before it was ready")
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit(f"contract: {url} did not answer 200 within 60 s")
EOF
then
    echo "contract: server log:" >&2
    tail -n 40 "$SERVER_LOG" >&2
    exit 1
fi

# Checks that match the contract. positive_data_acceptance is left out on purpose: most
# schema-valid requests carry a random (invalid) subject token and are rightly refused.
# The stateful phase is left out: its scenarios follow values from earlier responses,
# so a fixed seed would not give a fixed run.
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance
CHECKS=$CHECKS,response_headers_conformance,response_schema_conformance
CHECKS=$CHECKS,negative_data_rejection

status=0
(
    cd "$ROOT"
    SCHEMATHESIS_HOOKS=$HERE/hooks.py \
    STS_BRIDGE_DEV_ISSUER_URL=$ISSUER_URL \
    "$PYTHON" -m schemathesis.cli --no-color --config-file "$HERE/schemathesis.toml" \
        run "$SPEC" \
        --url "$SERVICE_URL" \
        --checks "$CHECKS" \
        --phases examples,coverage,fuzzing \
        --max-examples "$MAX_EXAMPLES" \
        --seed "$SEED" \
        --generation-database none \
        --workers "$WORKERS" \
        --request-timeout 10 \
        --suppress-health-check too_slow,filter_too_much \
        "${REPORT_ARGS[@]}" \
        ${CONTRACT_ARGS:-}
) || status=$?

if [ "$status" -ne 0 ]; then
    echo "contract: last lines of the server log:" >&2
    tail -n 20 "$SERVER_LOG" >&2
fi

[ -n "$REPORTS" ] && "$PYTHON" - "$REPORTS/schemathesis.json" "$status" <<'EOF' || true
import json, sys
path, status = sys.argv[1], int(sys.argv[2])
try:
    with open(path) as f:
        report = json.load(f)
except (OSError, ValueError):
    print(f"contract: no report (schemathesis exited with {status})")
    sys.exit(0)
operations = (report.get("operations") or {}).get("tested", 0)
cases = (report.get("test_cases") or {}).get("generated", 0)
failures = sum(group.get("count", 0) for group in report.get("failures") or [])
errors = sum(group.get("count", 0) for group in report.get("errors") or [])
line = f"contract: {operations} operations, {cases} cases, {failures} failures"
if errors:
    line += f", {errors} errors"
print(line)
EOF

exit "$status"
