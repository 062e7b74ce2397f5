"""``trainer.num_nodes=2`` on Slurm: two nodes of one process each train as one node of two processes.

The nodes are two slurmd of this machine (``RNNLAB_SLURM_NODES=2``: ``scripts/cluster/slurm.sh``);
``srun`` starts one task per rank, Lightning's ``SLURMEnvironment`` reads the ranks from Slurm's
variables, and the processes meet over gloo on the first node's address, as on a cluster of machines.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import job_fields, squeue, wait_for
from conftest import REPO, SCRIPTS

QUICK = [
    "experiment=imdb_lstm",
    "data.val_size=8",
    "data.batch_size=4",
    "trainer.max_epochs=2",
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
RUN_TIMEOUT_S = 300
COMPARED = ("val/acc", "val/loss", "test/acc", "test/loss", "train/loss")


def _nodes(env: dict[str, str]) -> int:
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, env=env, timeout=30)
    return len(set(done.stdout.split()))


def _rank_nodes(log: str) -> int:
    """How many nodes the ranks 0 and 1 ran on, from the line each printed (``rank 1 on n2``)."""
    placed = dict(line.split()[1::2] for line in log.splitlines() if line.startswith("rank ") and " on " in line)
    assert sorted(placed) == ["0", "1"], log[-3000:]
    return len(set(placed.values()))


def _submit(env: dict[str, str], tmp_path: Path, name: str, nodes: int, tasks_per_node: int, *overrides: str) -> str:
    train = [sys.executable, str(SCRIPTS / "train.py"), *QUICK, f"hydra.run.dir={tmp_path / name}", *overrides]
    script = tmp_path / f"{name}.sh"
    script.write_text(
        "#!/bin/bash\n"
        # the nodes are named n1, n2, which no resolver knows; on a cluster Lightning takes the first
        # node of SLURM_NODELIST, which resolves there
        "export MASTER_ADDR=127.0.0.1\n"
        'srun bash -c \'echo "rank $SLURM_PROCID on $SLURMD_NODENAME"; exec "$@"\' rank '
        + " ".join(shlex.quote(a) for a in train)
        + "\n"
    )
    submitted = subprocess.run(
        ["sbatch", "--parsable", "-J", name, "-N", str(nodes), f"--ntasks-per-node={tasks_per_node}", "-c", "1"]
        + ["-t", "10", "-o", str(tmp_path / f"{name}.out"), str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    return submitted.stdout.strip()


def test_two_slurm_nodes_of_one_process_equal_one_node_of_two(slurm, tiny_data_dir, tmp_path):
    if _nodes(slurm) < 2:
        pytest.skip("the local Slurm has one node: start it with RNNLAB_SLURM_NODES=2 (as .ci/run does)")
    env = {**slurm, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    paths = [f"paths.data_dir={tiny_data_dir}", f"paths.cache_dir={tmp_path / 'cache'}"]
    jobs = {
        "one_node": _submit(env, tmp_path, "one_node", 1, 2, *paths, "trainer.devices=2", "trainer.num_nodes=1"),
        "two_nodes": _submit(env, tmp_path, "two_nodes", 2, 1, *paths, "trainer.devices=1", "trainer.num_nodes=2"),
    }
    try:
        wait_for(lambda: all(not squeue(env, "-j", j) for j in jobs.values()), RUN_TIMEOUT_S, "the two jobs to end")
    finally:
        subprocess.run(["scancel", *jobs.values()], env=env, timeout=30)
    logs = {name: (tmp_path / f"{name}.out").read_text() for name in jobs}
    for name, job in jobs.items():
        assert job_fields(env, job).get("JobState") == "COMPLETED", logs[name][-3000:]
        assert "MEMBER: 2/2" in logs[name] and "distributed_backend=gloo" in logs[name], logs[name][-3000:]
        assert logs[name].count("\nrun ") == 1 and "\nrun completed:" in logs[name]  # one summary: rank 0's
    # the two ranks ran under two slurmd, the other job's under one
    assert _rank_nodes(logs["two_nodes"]) == 2 and _rank_nodes(logs["one_node"]) == 1
    one, two = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in jobs)
    assert one["status"] == two["status"] == "completed"
    for key in COMPARED:
        assert two[key] == one[key], key
