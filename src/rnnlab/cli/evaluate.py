"""Test metrics of a checkpoint: ``python scripts/eval.py ckpt_path=PATH``."""

import hydra
from omegaconf import DictConfig

from rnnlab.cli import CONFIG_PATH, print_metrics, run_entry
from rnnlab.tasks.evaluate import evaluate


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def main(cfg: DictConfig) -> None:
    print_metrics(run_entry(evaluate, cfg))


if __name__ == "__main__":
    main()
