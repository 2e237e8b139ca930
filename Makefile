# Two entry points for a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: repro test venv browser bench clean-venv

# The venv is rebuilt whenever requirements.txt or pyproject.toml change.
$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

venv: $(BIN)/.installed

repro: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# The page test in tests/test_serve.py drives Debian's Chromium. As root (CI) it is installed when missing and
# the test must run; anyone else gets a note, and the test skips saying which package it needs.
ROOT := $(filter 0,$(shell id -u))

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ -n "$(ROOT)" ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; \
	  else echo "note: no chromium: the browser test will be skipped (apt-get install chromium)"; fi; }

test: venv browser
	PATH="$(CURDIR)/$(BIN):$$PATH" LANDMARKS_BROWSER_TEST=$(if $(ROOT),required,optional) $(BIN)/python -m pytest

bench: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" sh -c 'for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done'

clean-venv:
	rm -rf $(VENV)
