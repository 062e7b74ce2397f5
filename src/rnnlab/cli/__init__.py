"""The entry points (``python -m rnnlab.cli.<name>``, ``scripts/<name>.py``, ``rnnlab-<name>``).

The modules of this package are the only ones that know Hydra's command line. Here: where they
find the configs (inside the package, so an installed rnnlab runs too) and how they report
failure: one actionable line for a user error, and in a multirun a failed job is recorded (its
metrics.json) while the sweep goes on."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from rnnlab.ddp import preserved_environment
from rnnlab.errors import RnnlabError
from rnnlab.runs.folder import short_value
from rnnlab.runs.requeue import job_stamp

log = logging.getLogger("rnnlab")

CONFIG_PATH = "pkg://rnnlab.conf"
SUFFIX_CHARS = 80  # a folder name stays readable (and under file-system limits) however many overrides


def run_name(experiment: str | None, job_name: str) -> str:
    """A run folder's first part: the experiment preset, else the script (train, eval, ensemble)."""
    return experiment or job_name


def dir_suffix(override_dirname: str) -> str:
    """``_<key>-<value>+<key>-<value>`` for a folder name, from Hydra's ``key=value,key=value``.

    A value is shortened as in a legend (``short_value``) and every character outside ``[A-Za-z0-9_.+-]``
    becomes ``-``: the folder's path can then be passed back as an override (``ckpt_path=...``)
    without quoting (``=`` and ``,`` are override syntax) on any file system. Nothing when no
    override was given.
    """
    if not override_dirname:
        return ""
    items = []
    for item in override_dirname.split(","):
        key, _, value = item.partition("=")
        items.append(f"{key.lstrip('+~')}-{short_value(value)}")
    return "_" + re.sub(r"[^\w.+-]", "-", "+".join(items))[:SUFFIX_CHARS]


def run_of(ckpt_path: str) -> str:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/x.ckpt`` → ``<run>``), else its folder."""
    folder = Path(ckpt_path).expanduser().resolve().parent
    return str(folder.parent if folder.name == "checkpoints" else folder)


# the configs' run-folder names (conf/hydra/default.yaml) need these before Hydra composes anything
OmegaConf.register_new_resolver("rnnlab.run_name", run_name, replace=True)
OmegaConf.register_new_resolver("rnnlab.dir_suffix", dir_suffix, replace=True)
OmegaConf.register_new_resolver("rnnlab.run_of", run_of, replace=True)
# cached, as Hydra's `now`: a job the submitit launcher runs elsewhere gets the stamp its sweep was given
OmegaConf.register_new_resolver("rnnlab.job_stamp", job_stamp, replace=True, use_cache=True)


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_entry(task: Callable[[DictConfig], Any], cfg: DictConfig, finish: Callable[[], None] | None = None) -> Any:
    """Run one job; in a multirun every job starts from the same process state (no DDP left over).

    ``finish`` runs last however the job ends (the end-of-run summary), before any exit.
    """
    try:
        with preserved_environment():
            return task(cfg)
    except SIGTERMException:  # a SystemExit subclass: it would end the process with status 0
        print(
            "interrupted by SIGTERM: resume with resume=true (same command) or ckpt_path=<run>/checkpoints/last.ckpt",
            file=sys.stderr,
        )
        sys.exit(143)
    except KeyboardInterrupt as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if _in_multirun():  # the traceback at ERROR: Hydra's job log keeps it, and the sweep goes on
            log.error("job failed, sweep continues: %s: %s", type(exc).__name__, exc, exc_info=True)
            return None
        log.debug("details", exc_info=True)  # the full traceback goes to the run's log file
        if isinstance(exc, RnnlabError):
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        raise
    finally:
        if finish is not None:
            finish()


def print_metrics(metrics: dict[str, Any] | None) -> None:
    """``key: value`` lines of a run's metrics (what eval and ensemble show on the terminal)."""
    for key, value in sorted((metrics or {}).items()):
        print(f"{key}: {value}")
