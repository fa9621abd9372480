# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo local test lint typecheck unit bench chaos browser database clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

browser: $(STAMP)
	@bash infra/local/install-browser.sh
	@bash infra/local/install-axe.sh

database:
	@bash infra/local/install-mariadb.sh

demo: $(STAMP) database
	$(BIN)/backpack-migrate demo

local: $(STAMP)
	$(BIN)/backpack-migrate local

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) browser database lint typecheck
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest -m unit

bench: $(STAMP) database
	$(BIN)/python -m infra.bench.run

# The demo export plus 100 generated learners under faults; CHAOS_ARGS="--badgr 0.1 --kills 0.05 --aws 0.01"
chaos: $(STAMP)
	$(BIN)/python -m infra.chaos.run $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache build
