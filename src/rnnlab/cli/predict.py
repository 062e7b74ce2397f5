"""Classify new text: ``python scripts/predict.py ckpt_path=PATH text="..."`` (or ``input=FILE [output=CSV]``)."""

import hydra
from omegaconf import DictConfig

from rnnlab.cli import CONFIG_PATH, run_entry
from rnnlab.tasks.predict import run


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
def main(cfg: DictConfig) -> None:
    run_entry(run, cfg)


if __name__ == "__main__":
    main()
