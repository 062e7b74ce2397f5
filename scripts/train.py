"""Train (then test the best checkpoint): python scripts/train.py [experiment=NAME] [key=value ...]"""

import hydra
from omegaconf import DictConfig

from rnnlab.cli import run_entry
from rnnlab.train import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_entry(train, cfg)
    # Hydra sweepers (Optuna) optimise the returned value
    return metrics.get(cfg.get("optimized_metric")) if metrics else None


if __name__ == "__main__":
    main()
