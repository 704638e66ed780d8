# Two commands for a fresh clone: `make demo` and `make test` (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-unit test-integration bench lint stack schemas clean

setup: $(STAMP) .tools/node_modules/@asyncapi/specs .tools/node_modules/fhir

# The AsyncAPI JSON Schema that tests validate contracts/asyncapi/*.yaml against (needs npm).
.tools/node_modules/@asyncapi/specs:
	npm install --prefix .tools --no-audit --no-fund --loglevel=error @asyncapi/specs@6.11.1

# FHIR.js, the R4 validator that tests check the FHIR mappings with (needs npm and node).
.tools/node_modules/fhir:
	npm install --prefix .tools --no-audit --no-fund --loglevel=error fhir@4.12.0

$(STAMP): contracts/pyproject.toml services/kit/pyproject.toml services/lab/pyproject.toml services/referral/pyproject.toml deploy/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e contracts -e 'services/kit[dev]' -e services/lab -e services/referral -e deploy
	touch $(STAMP)

demo: setup
	$(BIN)/yigongti-demo

stack: setup
	$(BIN)/yigongti-stack

test: setup
	$(BIN)/python -m pytest -q

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

test-integration: setup
	$(BIN)/python -m pytest -q tests/integration

bench: setup
	$(BIN)/python -m yigongti_deploy.bench

lint: setup
	$(BIN)/ruff check .

schemas: setup
	$(BIN)/python -m yigongti_contracts.export

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .run
