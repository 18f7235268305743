# `make demo` runs a real search; `make test` runs the test suite and builds the docs (site/).
# Both set up .venv/ first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nasfw-installed

.PHONY: setup demo test docs lint mlflow-ui clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel first: with no torch present, pip would resolve torch to a CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m nasfw

test: setup docs
	$(PY) -m ruff check .
	$(PY) -m pytest

# The documentation (mkdocs.yml, docs/) in site/; --strict: a broken reference or link fails.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet --site-dir site

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

mlflow-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db

clean:
	rm -rf $(VENV) outputs multirun nasfw.db mlflow.db mlartifacts site
