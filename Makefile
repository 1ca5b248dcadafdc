# txvnc: `make run` starts the service, `make demo` adds a VM, `make test`
# runs every test. Each sets up what it needs from a fresh clone, saying
# what it installs in one "==> " line a step (pip, npm and apt stay quiet
# unless they fail), and ends with a line saying how it went.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q --disable-pip-version-check
SOURCES := $(shell find txvnc twisted -type f \( -name '*.py' -o -name '*.html' -o -name '*.js' -o -name '*.css' \) -not -path 'txvnc/novnc/*') setup.cfg setup.py pyproject.toml package.json package-lock.json

.PHONY: install run demo test lint fuzz clean bench bench-quick

$(BIN)/python:
	@echo "==> creating $(VENV) ($(PYTHON) -m venv) and upgrading pip in it"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip

# A regular (not editable) install: setuptools' default editable install
# uses an import hook that Twisted's plugin finder cannot see, and
# `twistd txvnc` would answer "Unknown command". The build copies noVNC
# into the package (setup.py), running `npm ci` first when node_modules is
# missing: npm is needed to build from a checkout, never to run.
$(VENV)/.installed: $(BIN)/python $(SOURCES)
	@scripts/system-deps npm
	@echo "==> installing txvnc and its dependencies (Twisted, Autobahn, treq, cryptography, prometheus_client, txredisapi) into $(VENV), noVNC inside it (pip install .)"
	@$(PIP) .
	@touch $@

$(VENV)/.test-deps: $(VENV)/.installed setup.cfg
	@echo "==> installing the test and dev tools (pytest, Playwright, Hypothesis, schemathesis, ruff, mypy, import-linter) into $(VENV) (pip install '.[test,dev]')"
	@$(PIP) '.[test,dev]'
	@touch $@

node_modules/.package-lock.json: package.json package-lock.json
	@scripts/system-deps npm
	@echo "==> installing noVNC into node_modules for the tests (npm ci)"
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

install: $(VENV)/.installed
	@echo "==> installed: $(BIN)/twistd txvnc and $(BIN)/txvnc (make run starts it)"

run: install
	@echo "==> starting txvnc: proxy on tcp:6080, token API on 127.0.0.1:6081, key in txvnc-api.key; Ctrl-C stops it"
	@$(BIN)/twistd -n --pidfile= txvnc

demo: install
	@scripts/system-deps demo
	@echo "==> starting the demo: txvnc and a qemu VM (logs in .demo/)"
	@scripts/demo

# The tests' own twistd processes serve the checkout's node_modules.
test: install $(VENV)/.test-deps node_modules/.package-lock.json tests/nova/.venv/.installed
	@scripts/system-deps test
	@echo "==> running every test (pytest; the end-to-end ones start qemu, twistd and Chromium)"
	@status=0; $(BIN)/pytest || status=$$?; \
	if [ $$status -eq 0 ]; then echo "==> make test: every test passed"; \
	else echo "==> make test: FAILED (pytest exit status $$status; see above)"; exit $$status; fi

# nova from the package index in an environment of its own, apart from
# txvnc's (importing nova pulls in eventlet): tests/nova/mint.py runs nova's
# migrations and mints nova's tokens for the nova drop-in tests.
tests/nova/.venv/.installed: tests/nova/requirements.txt
	@echo "==> installing nova (its migrations and token code, for the tests) into tests/nova/.venv"
	@$(PYTHON) -m venv tests/nova/.venv
	@tests/nova/.venv/bin/pip install -q --disable-pip-version-check --upgrade pip
	@tests/nova/.venv/bin/pip install -q --disable-pip-version-check -r tests/nova/requirements.txt
	@touch $@

# The benchmark's own environment, apart from txvnc's: websockify and the
# plotting library in benchmarks/.venv, the Node load client's packages in
# benchmarks/node_modules.
benchmarks/.venv/.installed: benchmarks/requirements.txt
	@echo "==> installing the benchmark's environment (websockify, matplotlib, py-spy) into benchmarks/.venv"
	@$(PYTHON) -m venv benchmarks/.venv
	@benchmarks/.venv/bin/pip install -q --disable-pip-version-check --upgrade pip
	@benchmarks/.venv/bin/pip install -q --disable-pip-version-check -r benchmarks/requirements.txt
	@touch $@

benchmarks/node_modules/.package-lock.json: benchmarks/package.json benchmarks/package-lock.json
	@scripts/system-deps npm
	@echo "==> installing the load client's Node packages (ws, bufferutil) into benchmarks/node_modules (npm ci)"
	@cd benchmarks && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

BENCH_DEPS := install benchmarks/.venv/.installed benchmarks/node_modules/.package-lock.json

bench: $(BENCH_DEPS)
	@echo "==> running the benchmark (benchmarks/run.py; results in benchmarks/results/)"
	@benchmarks/.venv/bin/python benchmarks/run.py $(BENCH_ARGS)

bench-quick: $(BENCH_DEPS)
	@echo "==> running the short benchmark (benchmarks/run.py --quick)"
	@benchmarks/.venv/bin/python benchmarks/run.py --quick $(BENCH_ARGS)

# Coverage-guided fuzzing (atheris) of the parsers strangers reach, for a
# fixed time; findings land in .fuzz/ as crash-* files.
FUZZ_SECONDS ?= 120
$(VENV)/.fuzz-deps: $(VENV)/.installed setup.cfg
	@echo "==> installing atheris into $(VENV) (pip install '.[fuzz]')"
	@$(PIP) '.[fuzz]'
	@touch $@

fuzz: $(VENV)/.fuzz-deps
	@mkdir -p .fuzz/corpus
	@echo "==> fuzzing the parsers for $(FUZZ_SECONDS) s (findings in .fuzz/crash-*)"
	@cd .fuzz && ../$(BIN)/python ../fuzz/parsers.py -max_total_time=$(FUZZ_SECONDS) \
		-rss_limit_mb=2048 corpus ../fuzz/seeds

lint: install $(VENV)/.test-deps
	@echo "==> checking the code: ruff, mypy, import-linter's contracts"
	@$(BIN)/ruff check txvnc tests fuzz
	@$(BIN)/mypy txvnc
	@$(BIN)/lint-imports
	@echo "==> make lint: clean"

clean:
	rm -rf $(VENV) node_modules build *.egg-info tests/artifacts .fuzz benchmarks/.venv benchmarks/node_modules tests/nova/.venv
