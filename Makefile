# The two commands: `make run` (the whole stack with a demo org) and `make test` (the suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

export NO_PROXY := 127.0.0.1,localhost
export no_proxy := 127.0.0.1,localhost

.PHONY: run test lint format demo bench chaos security clean

# The first install shows pip's progress; later ones (pyproject.toml changed) stay quiet.
$(STAMP): pyproject.toml
	@if test -x $(PY); then \
		echo "Updating $(VENV) (pyproject.toml changed)..."; quiet=--quiet; \
	else \
		echo "Installing into $(VENV) (first run takes ~1 min)..."; quiet=; \
		$(PYTHON) -m venv $(VENV) || exit 1; \
	fi; \
	$(PY) -m pip install $$quiet --upgrade pip && $(PY) -m pip install $$quiet -e '.[dev,sandbox]'
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
	$(PY) -m devtools.devstack

demo: $(STAMP)
	$(PY) -m devtools.devstack --demo

test: $(STAMP)
	$(PY) -m pytest
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Benchmarks and long suites: not part of `make test`; each prints a table and writes bench/*.md.
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,sandbox,bench]'
	$(PY) -m bench.pipeline $(BENCH_ARGS)
	$(PY) -m bench.oauth_tokens $(OAUTH_BENCH_ARGS)

chaos: $(STAMP)
	$(PY) -m bench.chaos $(CHAOS_ARGS)

security: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,sandbox,security]'
	$(PY) -m bench.security $(SECURITY_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
