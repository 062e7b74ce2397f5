"""DDP on forked CPU processes after this process has already computed with several threads.

GNU OpenMP keeps a pool of threads that a forked child inherits on paper only: without
``release_openmp_threads`` the child's first multi-threaded op waits forever. Each case runs in a
fresh interpreter under a time limit, so a regression fails here instead of hanging the suite.
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from subprocess import PIPE

import pytest
from omegaconf import OmegaConf

LIMIT_S = 240  # the cases take seconds; a hang is what runs past this
WORK = """
import torch
torch.set_num_threads(2)
def parallel_work():  # big enough that torch splits it over both threads
    return torch.tanh(torch.linspace(-1.0, 1.0, 4_000_000)).sum().item()
parallel_work()  # the pool now exists in this process
"""


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "case.py"
    script.write_text(textwrap.dedent(WORK) + textwrap.dedent(code))
    # as a user sets it (or Lightning on a machine with 4 or more cores): 2 threads per rank
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, str(script)]
    # a session of its own: on a hang its forked children go too, not only the process we started
    with subprocess.Popen(cmd, stdout=PIPE, stderr=PIPE, text=True, env=env, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=LIMIT_S)
        except subprocess.TimeoutExpired as hung:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"a forked process hung at its first multi-threaded op ({LIMIT_S} s)") from hung
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_a_child_forked_after_the_threads_are_released_computes_with_two_threads(tmp_path):
    proc = run_python(
        """
        import os
        from rnnlab.training.ddp import release_openmp_threads
        assert release_openmp_threads()
        child = os.fork()
        if child == 0:
            parallel_work()
            os._exit(0 if torch.get_num_threads() == 2 else 3)
        _, status = os.waitpid(child, 0)
        parallel_work()  # this process makes a new pool
        print("exit", os.waitstatus_to_exitcode(status))
        """,
        tmp_path,
    )
    assert proc.returncode == 0 and proc.stdout.split() == ["exit", "0"], proc.stderr[-3000:]


@pytest.mark.parametrize(
    "trainer",
    [
        ["trainer=ddp_cpu"],
        # Lightning's registry name of the same strategy: rnnlab's builder swaps in its own
        ["trainer=cpu", "trainer.devices=2", "trainer.strategy=ddp_fork"],
    ],
    ids=["preset", "ddp_fork"],
)
def test_ddp_on_forked_cpu_ranks_trains_with_two_threads_per_rank_after_earlier_work(compose_cfg, tmp_path, trainer):
    run_cfg = tmp_path / "run.yaml"
    quick = ["trainer.max_steps=2", "trainer.enable_checkpointing=false", "trainer.num_sanity_val_steps=0"]
    OmegaConf.save(compose_cfg(*trainer, *quick), run_cfg, resolve=True)
    proc = run_python(
        f"""
        import lightning.pytorch as pl
        from omegaconf import OmegaConf
        from rnnlab.builders import build_trainer

        class Busy(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(4, 1)

            def training_step(self, batch, batch_idx):
                self.log("threads", float(torch.get_num_threads()), sync_dist=True, reduce_fx="min")
                return self.layer(batch).sum() + 0.0 * parallel_work()

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        trainer = build_trainer(OmegaConf.load({str(run_cfg)!r}), callbacks=[], logger=False)
        trainer.fit(Busy(), torch.utils.data.DataLoader(torch.randn(8, 4), batch_size=2))
        print("threads", int(trainer.callback_metrics["threads"]))  # rank 0's metrics come back
        """,
        tmp_path,
    )
    assert proc.returncode == 0 and proc.stdout.split() == ["threads", "2"], proc.stderr[-3000:]
