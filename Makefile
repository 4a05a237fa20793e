# Two targets the README documents; both bootstrap .venv on a fresh machine.
#   make reproduce [PROFILE=default] [RUN_DIR=results] [DATA_ROOT=/path/to/CelebA_Spoof] [FORCE=1]
#   make test        (lint, then every test but the browser test)
#   make lint        (ruff, configured in pyproject.toml)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= default
RUN_DIR ?= results
DATA_ROOT ?=
STAMP := $(VENV)/.paperkit-installed

.PHONY: reproduce test lint test-browser clean-cache

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (paperkit)" >/dev/null
	@touch $(STAMP)

reproduce: $(STAMP)
	$(PY) -m paperkit reproduce --profile $(PROFILE) --run-dir $(RUN_DIR) $(if $(DATA_ROOT),--data-root $(DATA_ROOT),) $(if $(FORCE),--force,)

lint: $(STAMP)
	$(VENV)/bin/ruff check paperkit tests notebooks

test: lint
	$(PY) -m pytest

# notebook 05 in JupyterLab + headless Chromium (Debian's /usr/bin/chromium); not part of `make test`
test-browser: $(STAMP)
	$(PY) -m pytest -m browser tests/test_browser.py

clean-cache:
	rm -rf $${PAPERKIT_CACHE:-$$HOME/.cache/paperkit}
