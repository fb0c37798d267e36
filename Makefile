# `make demo` runs the gateway with the dev PKI and an echo upstream; `make test` passes the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint unit certs schema e2e-browser soak bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

certs: $(STAMP)
	$(BIN)/mtls-gateway dev-certs --out certs-dev

demo: $(STAMP)
	$(BIN)/mtls-gateway demo -c config/demo.yaml --certs certs-dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check gateway tests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

e2e-browser: $(STAMP)
	command -v chromium >/dev/null && command -v certutil >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libnss3-tools)
	$(BIN)/pytest -q -m browser tests/e2e

bench: $(STAMP)
	$(BIN)/python bench/run.py

soak: $(STAMP)
	SOAK_SECONDS=60 $(BIN)/pytest -q -s tests/integration/test_soak.py

schema: $(STAMP)
	$(BIN)/mtls-gateway schema > config/schema.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
