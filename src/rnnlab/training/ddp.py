"""DDP whose extra ranks run the job's own config: correct inside a Hydra multirun, by design.

Lightning's subprocess launcher starts ranks 1..N-1 by running the command line again. In a
multirun that command line is the whole sweep (``-m`` and every swept value): each extra rank
would start a sweep of its own and join the parent's jobs only by coincidence, and a sampling
search (Optuna) would ask different trials in every copy. Here each extra rank composes the
config Hydra saved into the job's folder (``<job>/.hydra/config.yaml``), as a single run into
that same folder, so it trains exactly the parent's job and nothing else; rank 0 writes the
folder (``metrics.json``, checkpoints). Outside Hydra (no saved config) Lightning's own launch is kept.

Between the jobs of one process (a multirun), ``preserved_environment`` puts back the variables
the launcher set and the process group is closed, so the next job starts its own ranks.

``ForkDDPStrategy`` is Lightning's ``ddp_fork`` made safe to fork from a process that has already
computed: GNU OpenMP (torch's threads on Linux) keeps its worker threads between parallel regions,
a forked child inherits the bookkeeping but not the threads, and its first parallel region with
more than one thread waits for them forever. Each launch first lets those threads go, and
``fork_safe`` gives it to a run that names Lightning's own (``trainer.strategy=ddp_fork``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

# what Lightning's launcher sets in this process for the ranks it starts
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
SAVED_CONFIG = Path(".hydra") / "config.yaml"
ENTRY = "rnnlab.cli.train"
OMP_PAUSE_SOFT = 1  # omp_pause_resource_t: threads go, data the runtime keeps for later stays


def rank_command(job_dir: Path, local_rank: int) -> list[str]:
    """How an extra rank runs the job: its saved config, into its folder, writing no config of its own."""
    quoted = "'" + str(job_dir).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return [
        sys.executable,
        "-m",
        ENTRY,
        "--config-path",
        str((job_dir / SAVED_CONFIG).parent),
        "--config-name",
        SAVED_CONFIG.stem,
        f"hydra.run.dir={quoted}",
        "hydra.output_subdir=null",
        f"hydra.job.name=train_rank{local_rank}",
    ]


class JobScriptLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher, with the extra ranks started from the job's saved config."""

    def __init__(self, *args: Any, job_dir: Path | None = None) -> None:
        super().__init__(*args)
        self.job_dir = job_dir

    def _call_children_scripts(self) -> None:
        if self.job_dir is None or not (self.job_dir / SAVED_CONFIG).is_file():
            return super()._call_children_scripts()  # not a Hydra job: Lightning's own command
        self._check_can_spawn_children()
        self.procs = []
        # the same rendezvous variables Lightning's launcher sets
        os.environ["MASTER_ADDR"] = self.cluster_environment.main_address
        os.environ["MASTER_PORT"] = str(self.cluster_environment.main_port)
        os.environ["NODE_RANK"] = str(self.cluster_environment.node_rank())
        os.environ["LOCAL_RANK"] = str(self.cluster_environment.local_rank())
        os.environ["WORLD_SIZE"] = f"{self.num_processes * self.num_nodes}"
        for local_rank in range(1, self.num_processes):
            env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            if os.environ.get("PL_GLOBAL_SEED") is None:
                env.pop("PL_GLOBAL_SEED", None)
            self.procs.append(subprocess.Popen(rank_command(self.job_dir, local_rank), env=env))
        return None


class JobDDPStrategy(DDPStrategy):
    """``DDPStrategy`` (start method ``popen``) whose extra ranks run the job in ``job_dir``."""

    def __init__(self, job_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_dir = Path(job_dir).resolve() if job_dir else None

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = JobScriptLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes, job_dir=self.job_dir
            )


def release_openmp_threads() -> bool:
    """Let the OpenMP runtime's idle worker threads go, so that a process forked next makes its own.

    OpenMP 5's ``omp_pause_resource_all``; the runtime starts new threads at the next parallel
    region of this process. False where no OpenMP runtime is loaded or it cannot pause.
    """
    try:
        pause = ctypes.CDLL(None).omp_pause_resource_all
    except (AttributeError, OSError):
        return False
    pause.argtypes = [ctypes.c_int]
    pause.restype = ctypes.c_int
    return pause(OMP_PAUSE_SOFT) == 0


class OpenMPSafeForkLauncher(_MultiProcessingLauncher):
    """Lightning's fork launcher that releases OpenMP's threads first (see the module's docstring)."""

    def launch(self, function: Any, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        release_openmp_threads()
        return super().launch(function, *args, trainer=trainer, **kwargs)


class ForkDDPStrategy(DDPStrategy):
    """Lightning's ``ddp_fork``: ranks forked from this process, each free to use several threads."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(start_method="fork", **kwargs)

    def _configure_launcher(self) -> None:
        self._launcher = OpenMPSafeForkLauncher(self, start_method="fork")


def fork_safe(strategy: Any) -> Any:
    """``strategy``, or ``ForkDDPStrategy`` with the same settings where it names Lightning's forking DDP.

    ``ddp_fork``, ``ddp_notebook`` and their ``find_unused_parameters`` variants are registry names
    of ``DDPStrategy(start_method="fork")``, whose ranks can hang as described above.
    """
    entry = StrategyRegistry[strategy] if isinstance(strategy, str) and strategy in StrategyRegistry else None
    if entry is None or entry["strategy"] is not DDPStrategy:
        return strategy
    params = dict(entry["init_params"])
    if params.pop("start_method", None) != "fork":
        return strategy
    return ForkDDPStrategy(**params)


@contextlib.contextmanager
def preserved_environment() -> Iterator[None]:
    """Run one job; afterwards the launcher's variables are as before and no process group is left open."""
    saved = {key: os.environ.get(key) for key in LAUNCH_ENV}
    try:
        yield
    finally:
        if saved["LOCAL_RANK"] is None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # this process started the ranks; the next job starts its own
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def extra_rank() -> bool:
    """True in a rank this module started: it runs the job rank 0 decided on, not a decision of its own."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) > 0


def other_srun_task() -> bool:
    """True in a task of ``srun`` other than the first: each task is a rank that Slurm started (two nodes,
    or one task per device), which Lightning finds from Slurm's variables; rank 0 speaks for the run."""
    return int(os.environ.get("SLURM_PROCID", "0") or 0) > 0
