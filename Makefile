# Two commands: `make train` (set up, then train the default experiment) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= imdb_lstm
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup train test test-slow lint clean-outputs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV)
	touch $@

train: setup
	$(PY) scripts/train.py experiment=$(EXPERIMENT) $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src scripts tests bench

clean-outputs:
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
