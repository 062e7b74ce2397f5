"""A Hydra callback that holds each job of a sweep at its start until every job has started.

Each job marks its start in ``<folder>/started`` and, once it has seen every job's mark, its meeting
in ``<folder>/met``. Under a launcher that runs one job after the other, the first job waits in vain
and goes on after ``timeout_s`` without a meeting mark. (Hydra turns a callback's exception into a
warning, so a mark, not an exception, is what a test reads.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class Rendezvous(Callback):
    def __init__(self, folder: str, jobs: int, timeout_s: float = 120.0) -> None:
        self.started, self.met = Path(folder) / "started", Path(folder) / "met"
        self.jobs, self.timeout_s = jobs, timeout_s

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        for folder in (self.started, self.met):
            folder.mkdir(parents=True, exist_ok=True)
        job = str(config.hydra.job.num)
        (self.started / job).touch()
        deadline = time.monotonic() + self.timeout_s
        while len(list(self.started.iterdir())) < self.jobs:
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
        (self.met / job).touch()
