# `make demo` runs the gateway with the dev PKI and an echo upstream; `make test` passes the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BUILT  := $(VENV)/.compiled

.PHONY: install compile demo test lint unit certs schema e2e-browser soak bench ab clean

# editable and uncompiled: `compile` below builds the request path in place
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	MTLS_GATEWAY_COMPILE=0 $(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# the request path compiled with mypyc (setup.py lists the modules), again whenever a source
# changes; without a C compiler it stays plain Python (a warning, not an error). Each module is
# built from its current source (unchanged ones from the build cache, with their old times):
# the touch tells gateway/__init__.py's staleness check so
$(BUILT): $(STAMP) setup.py $(wildcard gateway/*.py)
	rm -f gateway/*.so *__mypyc*.so
	$(BIN)/python setup.py -q build_ext --inplace
	touch -c gateway/*.so *__mypyc*.so
	touch $(BUILT)

install: $(STAMP)

compile: $(BUILT)

certs: $(BUILT)
	$(BIN)/mtls-gateway dev-certs --out certs-dev

demo: $(BUILT)
	$(BIN)/mtls-gateway demo -c config/demo.yaml --certs certs-dev

lint: $(BUILT)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check gateway tests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

unit: $(BUILT)
	$(BIN)/pytest -q tests/unit

e2e-browser: $(BUILT)
	command -v chromium >/dev/null && command -v certutil >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libnss3-tools)
	$(BIN)/pytest -q -m browser tests/e2e

bench: $(BUILT)
	$(BIN)/python bench/run.py

# CPU per request of this checkout against OLD (a git revision or a compiled tree), side by side
ab: $(BUILT)
	@test -n "$(OLD)" || (echo "usage: make ab OLD=<git revision or tree>" && exit 2)
	$(BIN)/python bench/ab.py $(OLD)

soak: $(BUILT)
	SOAK_SECONDS=60 $(BIN)/pytest -q -s tests/integration/test_soak.py

schema: $(BUILT)
	$(BIN)/mtls-gateway schema > config/schema.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info build gateway/*.so *__mypyc*.so
