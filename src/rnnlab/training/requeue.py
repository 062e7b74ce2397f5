"""Preemption on Slurm: a job warned before its end requeues itself and continues in its own folder.

Slurm warns a job before it is stopped in one of two ways, and rnnlab handles both the same:
- the signal asked for with ``sbatch --signal=USR1@<seconds>`` (the ``submitit_slurm`` launcher
  config asks for it) arrives before the time limit: :class:`RequeueOnSignal` notes it, and after
  the step in progress asks Slurm to requeue the job (``scontrol requeue``) and stops training;
- ``scontrol requeue`` or preemption with ``PreemptMode=REQUEUE`` sends SIGTERM only (at the time
  limit too, where no ``--signal`` was asked for: Lightning #20542): Lightning stops after the step.

Either way the job ends with status 143 and Slurm starts it again with the same job id and
``SLURM_RESTART_COUNT`` set; :func:`requeued` then makes ``train`` continue (as ``resume=true``) in the
same run folder, which is named from the job, not the clock (``conf/hydra/default.yaml``).

What is continued is ``checkpoints/last.ckpt`` as the last validation wrote it: a run continued
from there ends bit-for-bit equal to one never stopped (on CPU), where one continued from the middle
of an epoch would not (the data order, the random state and the epoch's running metrics are not in a
checkpoint). The state at the moment of the stop goes to ``checkpoints/interrupted.ckpt`` instead,
for ``ckpt_path=`` by hand. The cost is at most one epoch of training done again per preemption.

Lightning's own ``SLURMEnvironment(auto_requeue=True)`` would save from inside its signal handler
(possibly in the middle of an optimizer step) and requeue on SIGUSR1; the handler installed here
comes first, so Lightning leaves that signal alone, and the launcher and the job name the same one.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rnnlab.errors import ConfigError
from rnnlab.training.callbacks import CheckpointOnInterrupt

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted.ckpt"  # the state at a stop inside a Slurm job, beside last.ckpt
REQUEUE_TIMEOUT_S = 30


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes (``<array job>_<task>`` for an array task), ``None`` outside a batch job."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    job = os.environ.get("SLURM_JOB_ID")
    # an interactive allocation (salloc, srun --pty) is not requeued: its shell would be lost
    if not job or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive", "sh", "zsh"):
        return None
    return job


def requeued() -> bool:
    """This process runs a Slurm job that was requeued (preempted or requeued by hand) and started again."""
    return slurm_job_id() is not None and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def job_stamp(clock: str) -> str:
    """A run folder's stamp: ``slurm-<job id>`` inside a Slurm batch job, so that a requeued job finds the
    folder it started (lightning-hydra-template #146), else the clock's ``clock``."""
    job = slurm_job_id()
    return f"slurm-{job}" if job else clock


def signal_number(name: str) -> signal.Signals:
    """``USR1`` / ``SIGUSR1`` → ``signal.SIGUSR1``; anything else is a config error naming the value."""
    key = name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"
    if not re.fullmatch(r"SIG[A-Z0-9]+", key) or not hasattr(signal, key) or key in ("SIGKILL", "SIGSTOP"):
        raise ConfigError(f"callbacks.requeue_on_signal.signal={name!r} is not a signal to catch; use USR1 or USR2")
    return signal.Signals[key]


class RequeueOnSignal(pl.Callback):
    """Inside a Slurm batch job: on ``signal`` (the one ``sbatch --signal`` sends), requeue after the step
    in progress and stop; a stop saves to ``checkpoints/interrupted.ckpt`` so that ``last.ckpt`` stays
    the last validation's. Outside a Slurm batch job it does nothing."""

    def __init__(self, signal: str = "USR1", dirpath: str | Path = "checkpoints"):
        self.signal = signal_number(signal)
        self.dirpath = Path(dirpath)
        self.job = slurm_job_id()
        self.received = False
        self._previous: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.job is None or stage != "fit":
            return
        for callback in trainer.callbacks:  # the interrupt save must not replace the last validation's
            if isinstance(callback, CheckpointOnInterrupt):
                callback.path = self.dirpath / INTERRUPTED
        # before Lightning registers its handlers: finding this one, it leaves the signal alone
        self._previous = signal.signal(self.signal, self._note)
        log.info("slurm job %s: on %s this job requeues itself and stops", self.job, self.signal.name)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received = True  # only noted: acting inside a handler could cut an optimizer step in two

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if not self.received:
            return
        self.received = False
        if trainer.is_global_zero:
            requeue(self.job)
        raise SIGTERMException()  # the path a SIGTERM takes: save, record, exit 143

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(self.signal, self._previous)
            self._previous = None


def requeue(job: str | None) -> None:
    """``scontrol requeue <job>``: Slurm ends this run of the job (SIGTERM) and queues it again."""
    if job is None:
        return
    log.warning("slurm job %s: requeueing it (scontrol requeue); it continues from its last checkpoint", job)
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=REQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("slurm job %s: scontrol requeue failed (%s); resume it by hand with resume=true", job, exc)
        return
    if done.returncode != 0:
        log.error("slurm job %s: scontrol requeue failed: %s", job, done.stderr.strip())
