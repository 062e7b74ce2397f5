"""Continue a prompt: ``python scripts/generate.py ckpt_path=PATH prompt="The island" max_new_tokens=200``."""

import hydra
from omegaconf import DictConfig

from rnnlab.cli import CONFIG_PATH, run_entry
from rnnlab.tasks.generate import generate


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="generate")
def main(cfg: DictConfig) -> None:
    print(run_entry(generate, cfg))


if __name__ == "__main__":
    main()
