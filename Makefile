# Tidemark — the README's commands. `make run` and `make test` set everything up first.
PYTHON    ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
KAFKA_LIB := .cache/kafka/libs
INSTALLED := $(VENV)/.installed
FETCHED   := $(KAFKA_LIB)/.fetched
MIRROR_LIB := .cache/mirror/libs
MIRROR_FETCHED := $(MIRROR_LIB)/.fetched
PYTEST_ARGS ?=
# Test processes (pytest-xdist; 0: run in this process). The e2e tests mostly wait on
# sockets and brokers, so two share two cores well (tests/conftest.py says how).
TEST_WORKERS ?= 2
NODE_STAMP := node_modules/.installed
JS_STAMP   := clients/js/node_modules/.installed

.PHONY: setup run test lint kafka clean haproxy nginx redis chaos fuzz chromium conformance

setup: $(INSTALLED) $(FETCHED) $(MIRROR_FETCHED) haproxy nginx redis chromium $(NODE_STAMP) $(JS_STAMP)

# The load balancer of the multi-gateway tests (Debian's haproxy).
haproxy:
	@command -v haproxy >/dev/null || { \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq haproxy >/dev/null; }

# The buffering proxy of the client SDKs' fallback tests (tests/proxies.py; Debian's
# nginx, run by the tests as the test user, never as a service).
nginx:
	@command -v nginx >/dev/null || { \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nginx >/dev/null; }

# The dashboard's browser tests (tests/e2e/test_dashboard.py): Debian's chromium, driven by
# Playwright at /usr/bin/chromium (no browser is downloaded).
chromium:
	@command -v chromium >/dev/null || { \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The dashboard's npm packages, pinned by package-lock.json: uPlot (its dist file is vendored
# in gateway/static/vendor/; a test checks they are equal) and axe-core for the tests.
$(NODE_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	touch $@

# The JavaScript SDK's tools (clients/js, pinned by its package-lock.json): the type
# generator, esbuild and tsc, which the tests run to check the committed src/schema.ts and
# dist/ are fresh, and `ws`, the Node WebSocket of its e2e tests (Node < 22).
$(JS_STAMP): clients/js/package.json clients/js/package-lock.json
	npm ci --prefix clients/js --ignore-scripts --no-audit --no-fund
	touch $@

# Rebuild the JavaScript SDK after a change to clients/js/src or schemas/json (then commit
# clients/js/src/schema.ts, clients/js/dist/ and the gateway's copy of the browser bundle).
.PHONY: js
js: $(JS_STAMP)
	cd clients/js && npm run gen && npm run build
	cp clients/js/dist/tidemark-client.browser.js gateway/static/vendor/

# Refresh the vendored chart library after a version change in package.json (then commit).
.PHONY: vendor
vendor: $(NODE_STAMP)
	cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css \
	    gateway/static/vendor/
	cp node_modules/uplot/LICENSE gateway/static/vendor/uPlot.LICENSE

# The limits' shared store (Debian's redis-server); `tidemark dev` and the tests start it.
redis:
	@command -v redis-server >/dev/null || { \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# The broker: Apache Kafka and a log4j2 backend from Maven Central (deploy/kafka/pom.xml).
$(FETCHED): deploy/kafka/pom.xml
	rm -rf $(KAFKA_LIB)
	mvn --quiet --batch-mode -f deploy/kafka/pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(abspath $(KAFKA_LIB))
	touch $@

# MirrorMaker 2 for `tidemark mirror` (deploy/mirror/pom.xml; a classpath of its own).
$(MIRROR_FETCHED): deploy/mirror/pom.xml
	rm -rf $(MIRROR_LIB)
	mvn --quiet --batch-mode -f deploy/mirror/pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(abspath $(MIRROR_LIB))
	touch $@

run: setup
	$(BIN)/tidemark dev

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The long chaos runs (the test suite runs short ones): each prints a JSON report. The
# second is on a 3-node KRaft cluster whose partition leaders are SIGKILLed (docs/cluster.md);
# the third is the Durable Streams surface with the official client (docs/durable-streams.md).
CHAOS_ARGS ?= --seconds 300 --streams 60
CLUSTER_CHAOS_ARGS ?= --cluster 3 --seconds 120 --streams 60
DS_CHAOS_ARGS ?= --seconds 180 --streams 4
chaos: setup
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)
	$(BIN)/python -m tests.chaos $(CLUSTER_CHAOS_ARGS)
	$(BIN)/python -m tests.ds_chaos $(DS_CHAOS_ARGS)

# The long fuzz run (the test suite runs a short one): schemathesis against a real
# gateway's /v1/openapi.json; prints a JSON report (docs/api.md).
FUZZ_ARGS ?= --requests 10000
fuzz: setup
	$(BIN)/python -m tests.fuzz $(FUZZ_ARGS)

# The Durable Streams conformance run (docs/durable-streams.md): the official suite, pinned in
# conformance/package.json, against two gateways behind HAProxy, then against the reference
# Node server side by side; prints both pass counts and names every failing test.
conformance: setup
	$(BIN)/python -m tests.conformance

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

kafka: setup
	$(BIN)/tidemark kafka --data-dir .cache/kafka/data

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache node_modules test-artifacts

# The benchmark (bench/README.md): `make bench`, `make bench ARGS=--full`. Needs Go for
# the client swarm (bench/sseclient, stdlib only); py-spy (extra `bench`) for its profile.
ARGS ?=
BENCH_INSTALLED := $(VENV)/.bench-installed
.PHONY: bench

$(BENCH_INSTALLED): pyproject.toml $(INSTALLED)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $@

bench: setup $(BENCH_INSTALLED)
	$(BIN)/python -m bench.run $(ARGS)
