"""Train (then test the best checkpoint): ``python scripts/train.py [experiment=NAME] [key=value ...]``."""

import sys
from functools import partial
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rnnlab.cli import CONFIG_PATH, numerics_child, run_entry
from rnnlab.runs.summary import summary_lines
from rnnlab.tasks.train import train
from rnnlab.training.ddp import extra_rank, other_srun_task


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    # an extra DDP rank, or a sweep job's child for its numerics, runs its job from the saved config,
    # with no overrides of its own to compare
    overrides = None if extra_rank() or numerics_child() else list(HydraConfig.get().overrides.task)
    quiet = extra_rank() or other_srun_task()  # rank 0 alone prints the summary (the others' has no metrics)
    metrics = run_entry(partial(train, overrides=overrides), cfg, None if quiet else partial(summarize, cfg))
    # what a Hydra sweeper optimises: the best validation value of the run (its best checkpoint's)
    return metrics.get("best_score") if metrics and metrics.get("status") == "completed" else None


def summarize(cfg: DictConfig) -> None:
    """The run folder, best checkpoint, headline figures and TensorBoard command; or the error and the resume."""
    hydra = HydraConfig.get()
    multirun = hydra.mode == RunMode.MULTIRUN
    folder = f"hydra.sweep.dir={hydra.sweep.dir}" if multirun else f"hydra.run.dir={cfg.paths.output_dir}"
    logdir = Path(hydra.sweep.dir) if multirun else Path(cfg.paths.output_dir).parent
    argv = [*sys.argv[:1], *(["-m"] if multirun and "-m" not in sys.argv else []), *sys.argv[1:]]
    lines = summary_lines(Path(cfg.paths.output_dir), logdir, cfg.monitor, argv, folder)
    print("\n" + "\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
