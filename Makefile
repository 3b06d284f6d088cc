# SSE gateway — the commands a developer, CI and an operator need.
#   make run    the gateway on the embedded broker with the demo dashboard at http://127.0.0.1:8080/
#   make test   every test (unit, integration against real processes); installs what it needs

CARGO ?= cargo
# Development-only secret for `make run` (32+ bytes). Never use it anywhere real.
DEV_JWT_SECRET ?= dev-only-secret-change-me-0123456789
LISTEN ?= 127.0.0.1:8080
METRICS_LISTEN ?= 127.0.0.1:9090

.PHONY: run build test deps deploy-check test-docs test-publishers test-client test-browser fuzz bench cluster cluster-down lint fmt clean token

build:
	$(CARGO) build --release --workspace --locked

run:
	$(CARGO) build --release -p sse-gateway --locked
	@echo
	@echo "  dashboard:  http://$(LISTEN)/   (signs you in as 'demo', whose jobs the demo publishes)"
	@echo "  metrics:    http://$(METRICS_LISTEN)/metrics"
	@echo "  tokens:     ./target/release/sse-gateway mint-token --jwt-secret $(DEV_JWT_SECRET) --sub demo"
	@echo
	./target/release/sse-gateway --demo --listen $(LISTEN) --metrics-listen $(METRICS_LISTEN) \
		--jwt-secret $(DEV_JWT_SECRET)

# A local cluster on loopback: redis, N gateway nodes (default 3) and nginx on :8080; it
# refuses to start on ports in use (stop `make run` first) and stops exactly what it started.
NODES ?= 3
cluster:
	$(CARGO) build --release -p sse-gateway -p sse-publisher --locked
	@command -v nginx >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; }
	deploy/cluster.sh up $(NODES)

cluster-down:
	deploy/cluster.sh down

# A publisher token for the running `make run` gateway (for curl and sse-publish).
token:
	@$(CARGO) run -q --release -p sse-gateway -- mint-token --jwt-secret $(DEV_JWT_SECRET) --sub worker --role publisher

# Unit tests on exact bytes, then integration tests that start real gateway processes
# on ephemeral loopback ports.
test: deps
	$(CARGO) test --workspace --locked
	$(MAKE) test-docs
	deploy/check.sh
	loadtest/smoke.sh
	$(MAKE) test-publishers
	$(MAKE) test-client
	$(MAKE) test-browser

# Executable docs: every shell block of README.md, docs/clients.md and docs/publishers.md
# run against make run's gateway (and the README's Redis and two nodes) in a private
# network namespace, their shown output compared; the README's Rust example is
# publisher-sdk/examples/readme.rs, built and run (deploy/checks/docs.py says how).
test-docs:
	python3 deploy/checks/docs.py

# The Python and TypeScript publisher SDKs: each installs its toolchain and pinned
# dependencies locally, then runs its tests against real redis-server, a Redis Cluster and
# real gateways (the Rust SDK's tests are part of the cargo workspace above).
test-publishers:
	publisher-sdk/python/check.sh
	publisher-sdk/typescript/check.sh

# The browser client package (gateway/client): npm ci, a rebuild that must equal the
# committed gateway/assets/sse-client.js byte for byte, and its unit tests.
test-client:
	gateway/client/check.sh

# Real-browser end-to-end tests: headless Debian Chromium against real gateways, Redis and
# nginx (installs chromium/nginx/redis-server/nodejs if missing, npm ci, debug build).
test-browser:
	gateway/tests/browser/run.sh

# The property-based fuzzing of every parser and encoder (the fuzz_* proptests: request
# heads, the head guard, tokens, queries, event ids, composite ids, SSE frames, publish
# bodies) run long: `make test` runs 256 cases each, this 50,000 (PROPTEST_CASES=…).
PROPTEST_CASES ?= 50000
fuzz:
	PROPTEST_CASES=$(PROPTEST_CASES) $(CARGO) test --release --workspace --locked --lib -- fuzz_

# Side-by-side benchmarks (gateway embedded, gateway + Redis, Nginx + Nchan + Redis, and
# the raw-write floor; a topic to 50,000 subscribers over 3 gateway nodes); writes
# docs/benchmarks.md and docs/bench/*.png. About 23 minutes (the sum of its scenarios' last runs).
# Run by Debian's python3, the one python3-matplotlib is installed for (another python3
# may come first on PATH and draw no plots).
BENCH_DEBS = nginx libnginx-mod-nchan redis-server redis-tools python3 python3-matplotlib openssl
bench:
	@missing=""; for p in $(BENCH_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	$(CARGO) build --release --locked -p sse-gateway -p sse-loadtest
	/usr/bin/python3 loadtest/bench/bench.py

# Deployment artifacts: kustomize render, schemas, checkov, hadolint, compose, nginx,
# haproxy, and drift between manifests and the gateway's real flags (part of `make test`).
deploy-check:
	deploy/check.sh

# What the tests start for real: redis-server and nginx (Debian's packages) when missing.
deps:
	@missing=""; for p in redis-server nginx; do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	publisher-sdk/python/check.sh lint
	publisher-sdk/typescript/check.sh lint

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
