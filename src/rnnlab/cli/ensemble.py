"""Averaged probabilities of classifiers: ``python scripts/ensemble.py 'ckpt_paths=[A.ckpt,B.ckpt]'``."""

import hydra
from omegaconf import DictConfig

from rnnlab.cli import CONFIG_PATH, print_metrics, run_entry
from rnnlab.tasks.ensemble import ensemble


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="ensemble")
def main(cfg: DictConfig) -> None:
    print_metrics(run_entry(ensemble, cfg))


if __name__ == "__main__":
    main()
