"""rnnlab's Hydra sweeper over Optuna's ask-and-tell API (``hydra/sweeper=rnnlab_optuna``)."""
