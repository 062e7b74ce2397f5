"""Test metrics of a checkpoint: python scripts/eval.py ckpt_path=PATH"""

import hydra
from omegaconf import DictConfig

from rnnlab.cli import run_entry
from rnnlab.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    metrics = run_entry(evaluate, cfg)
    for key, value in sorted(metrics.items()):
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
