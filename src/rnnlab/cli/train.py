"""Train (then test the best checkpoint): ``python scripts/train.py [experiment=NAME] [key=value ...]``."""

from functools import partial

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rnnlab.cli import CONFIG_PATH, run_entry
from rnnlab.tasks.train import train


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    overrides = list(HydraConfig.get().overrides.task)
    metrics = run_entry(partial(train, overrides=overrides), cfg)
    # Hydra sweepers (Optuna) optimise the returned value
    return metrics.get(cfg.get("optimized_metric")) if metrics else None


if __name__ == "__main__":
    main()
