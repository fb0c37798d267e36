# `make demo` runs the gateway with the dev PKI and an echo upstream; `make test` passes the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN    := $(VENV)/.runtime
DEV    := $(VENV)/.dev
BUILT  := $(VENV)/.compiled
LOG    := $(VENV)/install.log
# exact versions and hashes of every dependency (`make lock` refreshes them); no build isolation,
# so setuptools comes from the lock too
PIP    := $(BIN)/pip install --require-hashes --no-deps --disable-pip-version-check
SELF   := MTLS_GATEWAY_COMPILE=0 $(BIN)/pip install --no-deps --no-build-isolation --disable-pip-version-check -e .

.PHONY: install compile demo test test-plain differential lint unit certs schema k8s-rules e2e-browser soak bench ab \
	lock clean

# what running the gateway needs, quietly: the full output goes to $(LOG), shown only on failure
$(RUN): requirements.txt pyproject.toml setup.py
	@echo "installing the gateway into $(VENV) (log: $(LOG))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@($(PIP) -r requirements.txt && $(SELF)) > $(LOG) 2>&1 || (cat $(LOG); exit 1)
	@touch $(RUN)

# what testing, linting and compiling need on top
$(DEV): $(RUN) requirements-dev.txt
	@echo "installing the development tools into $(VENV) (log: $(LOG))"
	@$(PIP) -r requirements-dev.txt > $(LOG) 2>&1 || (cat $(LOG); exit 1)
	@touch $(DEV)

# the request path compiled with mypyc (setup.py lists the modules), again whenever a source
# changes; without a C compiler it stays plain Python (a warning, not an error). Each module is
# built from its current source (unchanged ones from the build cache, with their old times):
# the touch tells gateway/__init__.py's staleness check so
$(BUILT): $(DEV) setup.py $(wildcard gateway/*.py gateway/*/*.py)
	@echo "compiling the request path with mypyc (log: $(VENV)/compile.log)"
	@rm -f gateway/*.so gateway/*/*.so *__mypyc*.so
	@$(BIN)/python setup.py -q build_ext --inplace --parallel 2 > $(VENV)/compile.log 2>&1 \
	  || (cat $(VENV)/compile.log; exit 1)
	@touch -c gateway/*.so gateway/*/*.so *__mypyc*.so
	@touch $(BUILT)

install: $(DEV)

compile: $(BUILT)

certs: $(RUN)
	$(BIN)/mtls-gateway dev-certs --out certs-dev

# plain Python unless compiled before (then the compile is kept current): no compiler wait
demo: $(RUN) $(if $(wildcard gateway/*/*.so),$(BUILT))
	@$(BIN)/mtls-gateway demo -c config/demo.yaml --certs certs-dev

lint: $(BUILT)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check gateway tests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q -m "not differential"

# the gateway in front of real origin servers (gunicorn, waitress, uvicorn, aiohttp, Node, nginx):
# the route, identity headers and body each origin executes are what the gateway decided
differential: $(BUILT)
	$(BIN)/pytest -q -s -m differential tests/differential

# the documented fallback: the same suite on plain Python (no compiled module loaded)
test-plain: $(DEV)
	MTLS_GATEWAY_PLAIN=1 $(BIN)/pytest -q tests/unit tests/integration

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

# refresh the lock files from pyproject.toml's ranges, then run the suite on what they locked
lock: $(RUN)
	$(BIN)/pip install -q --disable-pip-version-check "uv>=0.5,<1"
	$(BIN)/uv pip compile -q --upgrade --generate-hashes --python-version 3.11 \
	  --custom-compile-command "make lock" pyproject.toml requirements-build.in \
	  -o requirements.txt
	$(BIN)/uv pip compile -q --upgrade --generate-hashes --python-version 3.11 \
	  --custom-compile-command "make lock" pyproject.toml requirements-build.in --extra dev \
	  -o requirements-dev.txt
	$(MAKE) test

# the PrometheusRule of deploy/kubernetes/prometheus-operator, from deploy/prometheus/alerts.yaml
k8s-rules: $(RUN)
	$(BIN)/python deploy/prometheus/prometheusrule.py

schema: $(RUN)
	$(BIN)/mtls-gateway schema > config/schema.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info build gateway/*.so gateway/*/*.so *__mypyc*.so
