# Everything a newcomer needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: setup demo test test-services lint browser prometheus bench proto clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

# Chromium + chromedriver for the dashboard's browser test (Debian packages; needs root).
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "note: chromium/chromedriver missing and not root: browser tests will skip"; fi; }

# Prometheus (+ promtool) for the DCGM pull tests (Debian package; needs root). The tests start
# their own server on a free loopback port; the package's service must not hold :9090, so on
# install invoke-rc.d is told not to start it (policy-rc.d) and a running systemd disables it.
prometheus:
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    made=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made=1; fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	    rc=$$?; [ -n "$$made" ] && rm -f /usr/sbin/policy-rc.d; \
	    if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi; \
	    exit $$rc; \
	  else echo "note: prometheus/promtool missing and not root: DCGM pull tests will skip"; fi; }

# Demo flags pass through ARGS, e.g. make demo ARGS="--port 8001 --dashboard-port 8051 --history 2d".
demo: setup
	$(BIN)/costctl demo $(ARGS)

test: setup browser prometheus
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check costctl billing scheduler dashboard tests
	$(BIN)/mypy
	$(BIN)/lint-imports

# Regenerate the kubelet PodResources gRPC modules from scheduler/podresources/v1/api.proto.
proto: setup
	$(BIN)/python scripts/gen_proto.py

bench: setup
	bash bench/run_all.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
