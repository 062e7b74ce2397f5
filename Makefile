# rnnlab's everyday commands; `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= imdb_lstm
ARGS ?=
PYTEST_ARGS ?=
# test processes at once (pytest-xdist): two overlap one test's start-up and subprocesses with another's
# compute on a 2-core machine; 0 runs them all in the one pytest process
TEST_WORKERS ?= 2
LOGDIR ?= outputs

.PHONY: help setup train smoke test test-slow lint tensorboard clean-outputs

help:  ## what each target does
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 22

setup: $(VENV)/.installed  ## create .venv and install rnnlab with its dev tools (CPU torch without a GPU)

$(VENV)/.installed: pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV)
	touch $@

train: setup  ## train EXPERIMENT (default imdb_lstm) and test its best checkpoint; ARGS="key=value ..."
	$(PY) scripts/train.py experiment=$(EXPERIMENT) $(ARGS)

smoke: setup  ## a few batches of each task (IMDb, novel, news) end to end on the real data, in minutes
	$(PY) scripts/train.py -m experiment=imdb_lstm,novel_lstm,news_gru debug=limit \
		hydra.sweep.dir=$(LOGDIR)/smoke/$$(date +%Y-%m-%d_%H-%M-%S) \
		'hydra.sweep.subdir=$${hydra.job.num}_$${hydra.runtime.choices.experiment}' $(ARGS)

test: setup  ## the test suite (tiny data it makes itself; the real data when it is there)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-slow: setup  ## the long trainings marked slow
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: setup  ## ruff
	$(VENV)/bin/ruff check src scripts tests bench

tensorboard: setup  ## TensorBoard over every run folder (LOGDIR=outputs)
	$(VENV)/bin/tensorboard --logdir $(LOGDIR)

clean-outputs:  ## delete every run folder under outputs/
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
