# Every target creates/updates the virtual environment in .venv first.
# TORCH_SPEC: on the project's build machines `torch==2.13.0` is a local CPU wheel; elsewhere pass
# e.g. TORCH_SPEC='torch' (any release in pyproject's range works).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

# Debian packages: a speech synthesiser and stroke fonts for the demo corpora (model.prepare), Chromium
# and its driver for the demo page's browser test, redis-server for the service tests. Without them the
# tests that need them are skipped and say why (under CI=true they fail instead: tests/cikit.py); the PyPI
# Hershey-Fonts stands in for the fonts.
APT_PACKAGES := festival festvox-us-slt-hts espeak-ng hershey-fonts-data chromium chromium-driver redis-server tesseract-ocr

.PHONY: setup system-deps serve worker test test-fast lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '$(TORCH_SPEC)'
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	else echo "as root: apt-get install $(APT_PACKAGES)"; fi

# The service with the shipped demo checkpoints. Without REDIS_URL it runs the jobs in-process
# (embedded mode: nothing else to start); with REDIS_URL it queues them for `make worker` processes.
serve: setup
	$(PY) -m app

worker: setup
	$(PY) -m worker

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy  # pyproject's [tool.mypy]

test: lint
	$(VENV)/bin/pytest

test-fast: setup
	$(VENV)/bin/pytest -m 'not slow'

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) -m model.bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info
