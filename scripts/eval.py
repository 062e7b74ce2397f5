"""Test metrics of a checkpoint: python scripts/eval.py ckpt_path=PATH"""

import hydra
from omegaconf import DictConfig

from rnnlab.cli import print_metrics, run_entry
from rnnlab.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    print_metrics(run_entry(evaluate, cfg))


if __name__ == "__main__":
    main()
