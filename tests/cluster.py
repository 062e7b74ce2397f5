"""The local Slurm cluster and PostgreSQL the cluster tests run against (``scripts/cluster/``).

CI (``.ci/run``) starts both before the tests and exports ``SLURM_CONF`` and ``RNNLAB_POSTGRES_URL``;
the fixtures (``slurm``, ``postgres_url``; a plugin of conftest.py, so one of each per session) use
those when they answer. Elsewhere a fixture starts its own service in a temporary
folder when the packages are installed and this is root, stops it when the session ends, and
otherwise skips its tests with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rnnlab.training.ddp import LAUNCH_ENV

from conftest import REPO

CLUSTER_SCRIPTS = REPO / "scripts" / "cluster"
START_TIMEOUT_S = 120
CLUSTER_FIXTURES = ("slurm", "postgres_url")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup`` every test of the one local Slurm and PostgreSQL runs on one
    worker, one after the other: they share a cluster of two nodes and a database, and a test that counts
    its jobs or kills one mid-trial must not meet another test's jobs."""
    for item in items:
        if any(name in CLUSTER_FIXTURES for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("cluster"))


def _script(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """One of the cluster scripts; one that hangs ends as a failure (status 124) with its reason, not an error."""
    cmd = ["bash", str(CLUSTER_SCRIPTS / name), *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"{name} {' '.join(args)}: no answer in {START_TIMEOUT_S}s")


def _answers(cmd: list[str]) -> bool:
    """The command is installed, answers within 30 s and succeeds."""
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _missing(*programs: str) -> str | None:
    absent = [p for p in programs if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install slurm-wlm munge postgresql; .ci/run does)"
    if os.geteuid() != 0:
        return "the local cluster runs its daemons as root"
    return None


@pytest.fixture(scope="session", name="slurm")
def slurm_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment that reaches the local Slurm cluster (``SLURM_CONF``), of two nodes where this starts it."""
    # what sbatch hands its jobs (--export=ALL): this process's environment without the DDP launch
    # variables an in-process DDP test left behind, which every job would otherwise share (one
    # MASTER_PORT for two jobs running at once: EADDRINUSE)
    submitter = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    conf = os.environ.get("SLURM_CONF")
    if conf and _answers(["sinfo", "-h"]):
        yield {**submitter, "SLURM_CONF": conf}  # started by .ci/run, which stops it
        return
    reason = _missing("slurmctld", "slurmd", "munged", "sbatch")
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    env = {
        **submitter,
        "RNNLAB_SLURM_PORTS": os.environ.get("RNNLAB_SLURM_PORTS", "6827,6828"),
        "RNNLAB_SLURM_NODES": os.environ.get("RNNLAB_SLURM_NODES", "2"),  # the two-node test needs two
    }
    started = _script("slurm.sh", "start", str(state), env=env)
    if started.returncode != 0:
        _script("slurm.sh", "stop", str(state), env=env)
        pytest.skip(f"the local Slurm cluster did not start: {started.stderr.strip()[-500:]}")
    try:
        yield {**env, "SLURM_CONF": str(state / "slurm.conf")}
    finally:
        _script("slurm.sh", "stop", str(state), env=env)


@pytest.fixture(scope="session", name="postgres_url")
def postgres_fixture() -> Iterator[str]:
    """An SQLAlchemy URL of an empty-able local PostgreSQL database for Optuna."""
    pytest.importorskip("psycopg2", reason="needs the cluster extra (psycopg2-binary)")
    url = os.environ.get("RNNLAB_POSTGRES_URL")
    if url:
        yield url  # started by .ci/run, which stops it
        return
    reason = _missing("runuser") or (None if list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")) else "no pg_ctl")
    if reason:
        pytest.skip(f"PostgreSQL: {reason}")
    # the server runs as the user postgres, who cannot enter pytest's own (0700) temporary folders
    state = Path(tempfile.mkdtemp(prefix="rnnlab-postgres-"))
    state.chmod(0o755)
    env = {**os.environ, "RNNLAB_POSTGRES_PORT": os.environ.get("RNNLAB_POSTGRES_PORT", "5449")}
    started = _script("postgres.sh", "start", str(state), env=env)
    if started.returncode != 0:
        _script("postgres.sh", "stop", str(state), env=env)
        shutil.rmtree(state, ignore_errors=True)
        pytest.skip(f"the local PostgreSQL did not start: {started.stderr.strip()[-500:]}")
    try:
        yield _script("postgres.sh", "url", str(state), env=env).stdout.strip()
    finally:
        _script("postgres.sh", "stop", str(state), env=env)
        shutil.rmtree(state, ignore_errors=True)


def wait_for(check: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.5) -> object:
    """``check()``'s first truthy value, polled; a clear failure after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")


def squeue(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, env=env, timeout=30)
    return done.stdout.strip()


def scontrol(env: dict[str, str], *args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, capture_output=True, env=env, timeout=30)


def job_fields(env: dict[str, str], job: str) -> dict[str, str]:
    """``scontrol show job``'s ``key=value`` fields (``JobState``, ``Reason``, ``Restarts`` ...)."""
    done = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, env=env, timeout=30)
    return dict(item.split("=", 1) for item in done.stdout.split() if "=" in item)


def release_requeued(env: dict[str, str], job: str, restarts: int) -> bool:
    """True once the job runs its ``restarts``-th restart; a requeued job is started at once, where Slurm
    would hold it for two minutes (reason BeginTime)."""
    fields = job_fields(env, job)
    if fields.get("JobState") == "PENDING" and fields.get("Reason") == "BeginTime":
        scontrol(env, "update", f"jobid={job}", "starttime=now")
    return fields.get("JobState") == "RUNNING" and int(fields.get("Restarts", 0)) >= restarts
