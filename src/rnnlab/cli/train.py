"""Train (then test the best checkpoint): ``python scripts/train.py [experiment=NAME] [key=value ...]``."""

from functools import partial

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rnnlab.cli import CONFIG_PATH, run_entry
from rnnlab.ddp import extra_rank
from rnnlab.tasks.train import train


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    # an extra DDP rank runs its job from the saved config, with no overrides of its own to compare
    overrides = None if extra_rank() else list(HydraConfig.get().overrides.task)
    metrics = run_entry(partial(train, overrides=overrides), cfg)
    # what a Hydra sweeper optimises: the best validation value of the run (its best checkpoint's)
    return metrics.get("best_score") if metrics and metrics.get("status") == "completed" else None


if __name__ == "__main__":
    main()
