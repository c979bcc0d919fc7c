# Two commands for a newcomer: `make run` and `make test`. Both build .venv from scratch.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench soak tools chromium clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed: install python3.11 and run make again"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# The project itself, editable: tests, benches and tools import it from any directory.
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

tools:
	@command -v gcloud >/dev/null 2>&1 || { echo "gcloud is missing: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install), then run make again"; exit 1; }
	@command -v java >/dev/null 2>&1 || { echo "java is missing: install a JRE (apt-get install openjdk-17-jre-headless), then run make again"; exit 1; }
	@[ -d "$$(dirname "$$(dirname "$$(readlink -f "$$(command -v gcloud)")")")/platform/cloud-firestore-emulator" ] || { echo "the Firestore emulator is missing: gcloud components install cloud-firestore-emulator (or apt-get install google-cloud-cli-firestore-emulator)"; exit 1; }

run: tools $(STAMP)
	$(PY) -m devtools.devstack

# The browser test drives Debian's chromium (Playwright's own browser download does not work here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the browser test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 || \
		{ echo "could not install chromium: run 'apt-get install -y chromium' as root, then make test again"; exit 1; }; }

test: tools chromium $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: tools $(STAMP)
	@for script in bench/archive.py bench/webhook.py bench/export.py bench/reminders.py; do echo "== $$script"; $(PY) $$script || exit 1; done

# Not part of make test: patients, exports and injected faults for SOAK_MINUTES (at most 30).
SOAK_MINUTES ?= 10
soak: tools $(STAMP)
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) .devstack .pytest_cache
