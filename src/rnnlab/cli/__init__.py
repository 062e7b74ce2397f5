"""The entry points (``python -m rnnlab.cli.<name>``, ``scripts/<name>.py``, ``rnnlab-<name>``).

The modules of this package are the only ones that know Hydra's command line. Here: where they
find the configs (inside the package, so an installed rnnlab runs too) and how they report
failure: one actionable line for a user error, and in a multirun a failed job is recorded (its
metrics.json) while the sweep goes on; and how they honour ``numerics`` (``rnnlab.numerics``), whose
variables must be set before torch loads, which it already has by the time Hydra composed the
config: a single run starts itself again (``exec``, same command, same run folder) with them set;
a job of a multirun runs in a child process from the config Hydra saved into its folder, as a DDP
rank does, so that each job of a sweep (``numerics=native,portable`` too) gets its own."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.numerics import REEXEC_MARK, NumericsSettings
from rnnlab.runs.folder import CONFIG, read_metrics, short_value
from rnnlab.training.ddp import preserved_environment
from rnnlab.training.requeue import job_stamp

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


NUMERICS_CHILD = "RNNLAB_NUMERICS_CHILD"  # set in a multirun job's child: the parent was given the overrides


def numerics_child() -> bool:
    """True in the child process a multirun job runs in for its numerics (``run_in_child``)."""
    return bool(os.environ.get(NUMERICS_CHILD))


def _quoted(path: str) -> str:
    """A path as a Hydra override value, whatever characters it holds."""
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"


def restart(numerics: NumericsSettings) -> None:
    """Replace this process by the same command with the numerics' variables set, into the same run folder.

    Hydra has made the run folder already; ``hydra.run.dir`` is pinned to it (unless the command
    named one) so that the folder's time stamp does not move. Never returns.
    """
    needed = numerics.unmet()
    request = json.dumps(needed, sort_keys=True)
    if os.environ.get(REEXEC_MARK) == request:  # this process is the restart, and still lacks them
        raise ConfigError(
            f"numerics={numerics.mode}: {', '.join(needed)} still differ after restarting with them set; "
            "something resets them between processes (a wrapper script, a sitecustomize): unset it"
        )
    argv = list(sys.orig_argv[1:])
    if not any(arg.startswith("hydra.run.dir=") for arg in argv):
        argv.append(f"hydra.run.dir={_quoted(HydraConfig.get().runtime.output_dir)}")
    log.info("numerics=%s: starting again with %s", numerics.mode, " ".join(f"{k}={v}" for k, v in needed.items()))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv], {**os.environ, **needed, REEXEC_MARK: request})


def entry_module(task: Callable[..., Any]) -> str:
    """The entry point (``rnnlab.cli.<name>``) whose job ``task`` is: ``rnnlab.tasks.<name>`` or the CLI itself."""
    module = getattr(task, "func", task).__module__
    entry = module.replace("rnnlab.tasks.", "rnnlab.cli.", 1)
    if not entry.startswith("rnnlab.cli.") or importlib.util.find_spec(entry) is None:
        raise ConfigError(f"no rnnlab entry point runs {module}: export the numerics variables before starting")
    return entry


def run_in_child(task: Callable[..., Any], numerics: NumericsSettings) -> dict[str, Any] | None:
    """Run this multirun job in a child process with the numerics' variables set; its ``metrics.json``.

    The child composes the config Hydra saved into the job's folder (what this job is, overrides
    applied) and writes into that folder; a SIGTERM this process gets is passed on to it.
    """
    job = Path(HydraConfig.get().runtime.output_dir)
    if not (job / CONFIG).is_file():
        raise ConfigError(
            f"numerics={numerics.mode} in a multirun runs each job from its saved {CONFIG}, which "
            f"hydra.output_subdir=null left out: keep hydra.output_subdir, or export the variables first"
        )
    command = [
        sys.executable,
        "-m",
        entry_module(task),
        "--config-path",
        str((job / CONFIG).parent),
        "--config-name",
        CONFIG.stem,
        f"hydra.run.dir={_quoted(str(job))}",
        "hydra.output_subdir=null",
    ]
    log.info("numerics=%s: job %s runs in a child process with %s", numerics.mode, job.name, numerics.unmet())
    child = subprocess.Popen(command, env={**os.environ, **numerics.unmet(), NUMERICS_CHILD: "1"})
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
    try:
        code = child.wait()
    except KeyboardInterrupt:  # the terminal sent it to the child too: let it finish its exit
        code = child.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code != 0:
        raise RnnlabError(f"the job in {job} failed in its child process (exit status {code}); its log is there")
    return read_metrics(job)


def run_entry(task: Callable[[DictConfig], Any], cfg: DictConfig, finish: Callable[[], None] | None = None) -> Any:
    """Run one job under its numerics; in a multirun every job starts from the same process state.

    ``finish`` runs last however the job ends (the end-of-run summary), before any exit.
    """
    try:
        with preserved_environment():
            numerics = NumericsSettings.from_config(cfg.get("numerics"))
            if numerics.unmet() and HydraConfig.initialized():
                if _in_multirun():
                    return run_in_child(task, numerics)
                restart(numerics)
            numerics.apply()
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
