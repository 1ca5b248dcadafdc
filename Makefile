# txvnc: `make run` starts the service, `make demo` adds a VM, `make test`
# runs every test. Each sets up what it needs from a fresh clone.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := $(shell find txvnc twisted -type f \( -name '*.py' -o -name '*.html' -o -name '*.js' -o -name '*.css' \) -not -path 'txvnc/novnc/*') setup.cfg setup.py pyproject.toml package.json package-lock.json

.PHONY: install run demo test lint fuzz clean bench bench-quick

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# A regular (not editable) install: setuptools' default editable install
# uses an import hook that Twisted's plugin finder cannot see, and
# `twistd txvnc` would answer "Unknown command". The build copies noVNC
# into the package (setup.py), running `npm ci` first when node_modules is
# missing: npm is needed to build from a checkout, never to run.
$(VENV)/.installed: $(BIN)/python $(SOURCES)
	@scripts/system-deps npm
	$(BIN)/pip install -q .
	@touch $@

$(VENV)/.test-deps: $(VENV)/.installed setup.cfg
	$(BIN)/pip install -q '.[test,dev]'
	@touch $@

node_modules/.package-lock.json: package.json package-lock.json
	@scripts/system-deps npm
	npm ci --no-audit --no-fund
	@touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/twistd -n --pidfile= txvnc

demo: install
	@scripts/system-deps demo
	scripts/demo

# The tests' own twistd processes serve the checkout's node_modules.
test: install $(VENV)/.test-deps node_modules/.package-lock.json
	@scripts/system-deps test
	$(BIN)/pytest

# The benchmark's own environment, apart from txvnc's: websockify and the
# plotting library in benchmarks/.venv, the Node load client's packages in
# benchmarks/node_modules.
benchmarks/.venv/.installed: benchmarks/requirements.txt
	$(PYTHON) -m venv benchmarks/.venv
	benchmarks/.venv/bin/pip install -q --upgrade pip
	benchmarks/.venv/bin/pip install -q -r benchmarks/requirements.txt
	@touch $@

benchmarks/node_modules/.package-lock.json: benchmarks/package.json benchmarks/package-lock.json
	@scripts/system-deps npm
	cd benchmarks && npm ci --no-audit --no-fund
	@touch $@

BENCH_DEPS := install benchmarks/.venv/.installed benchmarks/node_modules/.package-lock.json

bench: $(BENCH_DEPS)
	benchmarks/.venv/bin/python benchmarks/run.py $(BENCH_ARGS)

bench-quick: $(BENCH_DEPS)
	benchmarks/.venv/bin/python benchmarks/run.py --quick $(BENCH_ARGS)

# Coverage-guided fuzzing (atheris) of the parsers strangers reach, for a
# fixed time; findings land in .fuzz/ as crash-* files.
FUZZ_SECONDS ?= 120
$(VENV)/.fuzz-deps: $(VENV)/.installed setup.cfg
	$(BIN)/pip install -q '.[fuzz]'
	@touch $@

fuzz: $(VENV)/.fuzz-deps
	@mkdir -p .fuzz/corpus
	cd .fuzz && ../$(BIN)/python ../fuzz/parsers.py -max_total_time=$(FUZZ_SECONDS) \
		-rss_limit_mb=2048 corpus ../fuzz/seeds

lint: install $(VENV)/.test-deps
	$(BIN)/ruff check txvnc tests fuzz
	$(BIN)/mypy txvnc
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) node_modules build *.egg-info tests/artifacts .fuzz benchmarks/.venv benchmarks/node_modules
