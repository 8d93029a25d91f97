# sts-bridge developer entry points. CARGO_TARGET_DIR is honoured when exported.

VENV   := .venv
PYTHON := $(CURDIR)/$(VENV)/bin/python
# The google-auth demo needs a few packages (google-auth, requests, google-cloud-bigquery); the test tooling (Helm SDK, schemathesis)
# is far larger, so it is installed only for the tests.
DEMO_REQS  := tests/python/requirements.txt
TOOL_REQS  := tests/deploy/requirements.txt tests/contract/requirements.txt
DEMO_STAMP := $(VENV)/.demo-stamp
STAMP      := $(VENV)/.requirements-stamp
BIN    := $(or $(CARGO_TARGET_DIR),target)/debug/sts-bridge

.PHONY: run test deploy-check contract venv venv-demo lint clean bench fuzz

## run: the whole loop on loopback (service :8080, issuer :8081, STS stand-in :8082, BigQuery stand-in :8083)
run:
	cargo run -- dev

## test: deployment checks, the OpenAPI contract run, then the Rust tests
test: venv deploy-check contract
	@export STS_BRIDGE_PYTHON=$(PYTHON); \
	if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --no-fail-fast; \
	else \
		cargo test --no-fail-fast; \
	fi

## deploy-check: lint and render the Helm chart, validate manifests, check the Dockerfile
## and the Prometheus alert rules
deploy-check: venv
	$(PYTHON) tests/deploy/check_chart.py
	$(PYTHON) tests/deploy/check_dockerfile.py
	@if command -v promtool >/dev/null; then \
		promtool check rules deploy/prometheus/alerts.yaml; \
	elif [ -n "$$CI" ] && [ "$$CI" != false ]; then \
		echo "promtool is required in CI (Debian package prometheus)" >&2; exit 1; \
	else \
		echo "SKIPPED promtool check rules: promtool not installed (Debian package prometheus)"; \
	fi

## contract: schemathesis against the dev stack, checked against openapi.yaml
contract: venv
	cargo build --quiet --bin sts-bridge
	bash tests/contract/run.sh $(BIN) $(PYTHON)

## venv-demo: google-auth and requests only, for the demo `make run` prints
venv-demo: $(DEMO_STAMP)

## bench: release build, then A/B/C/D alternately with wrk, cold storm, RSS, audit writer,
## constant-rate p99, two replicas on one Redis (BENCH_REDIS_URL, default local); writes
## bench/results.md. Postgres from TEST_DATABASE_URL (default: local).
## Pass a soak with BENCH_ARGS="--soak 10".
RELEASE_DIR := $(or $(CARGO_TARGET_DIR),target)/release
bench:
	@command -v wrk >/dev/null || { \
		echo "installing wrk (Debian package)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q wrk; }
	cargo build --release --bin sts-bridge
	cargo bench --no-run --bench load
	ulimit -n 65536 2>/dev/null || ulimit -n 4096; \
	STS_BRIDGE_BIN=$(RELEASE_DIR)/sts-bridge cargo bench --bench load -- $(BENCH_ARGS)

## fuzz: each cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60); needs a nightly
## toolchain, installs cargo-fuzz from crates.io when missing. Sanitizer builds recompile
## every dependency, so they get their own FUZZ_TARGET_DIR. Findings land in fuzz/artifacts/.
FUZZ_SECONDS    ?= 60
FUZZ_TOOLCHAIN  ?= nightly
FUZZ_TARGETS    ?= token_form token_json options basic_header token_header
FUZZ_TARGET_DIR ?= $(if $(CARGO_TARGET_DIR),$(dir $(CARGO_TARGET_DIR))target-fuzz,$(CURDIR)/fuzz/target)
fuzz:
	@cargo +$(FUZZ_TOOLCHAIN) --version >/dev/null 2>&1 || { \
		echo "make fuzz needs a nightly Rust toolchain ($(FUZZ_TOOLCHAIN)): cargo-fuzz builds with sanitizer flags only nightly has." >&2; \
		echo "  rustup toolchain install $(FUZZ_TOOLCHAIN)" >&2; exit 1; }
	@cargo fuzz --version >/dev/null 2>&1 || { \
		echo "installing cargo-fuzz from crates.io"; cargo install --locked cargo-fuzz; }
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t; \
		echo "== $$t: $(FUZZ_SECONDS) s"; \
		cargo +$(FUZZ_TOOLCHAIN) fuzz run --fuzz-dir fuzz --target-dir $(FUZZ_TARGET_DIR) $$t \
			fuzz/corpus/$$t fuzz/seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=16384 -timeout=10 -print_final_stats=1 \
			|| { echo "fuzz target $$t found a crash: see fuzz/artifacts/$$t/" >&2; exit 1; }; \
	done

## venv: the demo packages plus the test tooling
venv: $(STAMP)

$(DEMO_STAMP): $(DEMO_REQS)
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(addprefix -r ,$(DEMO_REQS))
	touch $@

$(STAMP): $(DEMO_STAMP) $(TOOL_REQS)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(addprefix -r ,$(TOOL_REQS))
	touch $@

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

clean:
	cargo clean
	rm -rf $(VENV)
