"""Averaged probabilities of classifiers: python scripts/ensemble.py 'ckpt_paths=[A.ckpt,B.ckpt]'"""

import hydra
from omegaconf import DictConfig

from rnnlab.cli import print_metrics, run_entry
from rnnlab.ensemble import ensemble


@hydra.main(version_base="1.3", config_path="../conf", config_name="ensemble")
def main(cfg: DictConfig) -> None:
    print_metrics(run_entry(ensemble, cfg))


if __name__ == "__main__":
    main()
