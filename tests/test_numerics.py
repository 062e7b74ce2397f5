"""``numerics=portable``: the entry points honour it (single run, multirun), the run records what took
effect, a rerun names it, and a short portable run gives the same bits as the CPU kinds that recorded it.

The reference (``tests/data/numerics_reference.json``) holds one record per CPU kind that ran the
short portable run below. On a kind that recorded, the fresh run must equal its record bit for bit;
on a kind that did not, it must equal the others once two kinds have agreed, and until then the
test skips saying so: a CPU kind is never failed for being unverified. To record the kind you are
on (a new CPU, or after a change that moves the numbers on purpose)::

    RNNLAB_RECORD_NUMERICS=1 python -m pytest tests/test_numerics.py -k reference

then commit the file (with the CPU named in it, and on which other kinds it agreed).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import torch

from rnnlab import numerics
from rnnlab.errors import ConfigError
from rnnlab.numerics import NumericsSettings
from rnnlab.reporting.rerun import likely_cause, provenance_differences
from rnnlab.runs.folder import job_dirs, read_metrics, read_provenance

from conftest import SCRIPTS, TESTS

REFERENCE = TESTS / "data" / "numerics_reference.json"
RECORD = "RNNLAB_RECORD_NUMERICS"
# the short run the reference holds: the imdb_lstm preset (embedding, oneDNN LSTM, MKL linear layers,
# Adam, dropout, initialisation) for a few dozen steps on the tiny IMDb the tests write
SHORT_RUN = [
    "experiment=imdb_lstm",
    "data.val_size=8",
    "trainer.max_epochs=3",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
PORTABLE = NumericsSettings.from_config(
    {
        "mode": "portable",
        "threads": 2,
        "aten_cpu_capability": "avx2",
        "onednn_max_cpu_isa": "AVX2",
        "mkl_cbwr": "COMPATIBLE",
        "mkl_dynamic": False,
    }
)


def clean_environment() -> dict[str, str]:
    """This process's environment without any numerics variable (the tests start from native)."""
    skip = (*numerics.VARIABLES, numerics.REEXEC_MARK, "RNNLAB_NUMERICS_CHILD")
    return {k: v for k, v in os.environ.items() if k not in skip}


def train(tiny_data_dir: Path, cache: Path, *overrides: str, env: dict[str, str] | None = None, multirun=False):
    cmd = [sys.executable, str(SCRIPTS / "train.py"), *(["-m"] if multirun else []), *SHORT_RUN]
    cmd.append(f"paths.data_dir={tiny_data_dir}")
    return subprocess.run(
        [*cmd, f"paths.cache_dir={cache}", *overrides], capture_output=True, text=True, env=env or clean_environment()
    )


def weights_sha256(run_dir: Path) -> str:
    """One digest of the best checkpoint's weights, every tensor's bytes in the order of their names."""
    best = (read_metrics(run_dir) or {})["best_checkpoint"]
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def outcome(run_dir: Path) -> dict[str, Any]:
    """What the reference compares: every final metric (exact floats) and the weights' digest."""
    metrics = read_metrics(run_dir) or {}
    kept = {k: v for k, v in sorted(metrics.items()) if k.startswith(("train/", "val/", "test/"))}
    return {"metrics": kept, "weights_sha256": weights_sha256(run_dir)}


def cpu_kind(record: dict[str, Any]) -> dict[str, Any]:
    """A processor as the reference names it: model, vendor, family, model number and the flags that pick kernels."""
    cpu = (record.get("platform") or {}).get("cpu") or {}
    return {k: cpu.get(k) for k in ("model", "vendor", "family", "model_number", "flags")}


@pytest.fixture(scope="module")
def portable_run(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The short run with numerics=portable, through the real entry point from a native environment."""
    root = tmp_path_factory.mktemp("portable")
    proc = train(tiny_data_dir, root / "cache", "numerics=portable", f"hydra.run.dir={root / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "numerics=portable: starting again with" in proc.stdout + proc.stderr  # it did start again
    return root / "run"


def test_the_settings_are_checked_in_one_line_each():
    with pytest.raises(ConfigError, match=r"numerics.treads is not a setting"):
        NumericsSettings.from_config({"treads": 2})
    with pytest.raises(ConfigError, match=r"numerics.mkl_cbwr='AVX3' is not one of"):
        NumericsSettings.from_config({"mkl_cbwr": "AVX3"})
    with pytest.raises(ConfigError, match=r"numerics.onednn_max_cpu_isa=2 must be a name"):
        NumericsSettings.from_config({"onednn_max_cpu_isa": 2})  # a number from the command line
    with pytest.raises(ConfigError, match=r"numerics.threads=0 must be at least 1"):
        NumericsSettings.from_config({"threads": 0})
    with pytest.raises(ConfigError, match=r"mode=portable needs numerics.threads"):
        NumericsSettings.from_config({"mode": "portable", "threads": None})
    assert NumericsSettings.from_config(None) == NumericsSettings()  # a config from before: native
    assert NumericsSettings().environment() == {}
    assert PORTABLE.unmet({**PORTABLE.environment(), "MKL_CBWR": "AUTO"}) == {"MKL_CBWR": "COMPATIBLE"}


def test_a_run_that_could_not_get_its_variables_is_refused(monkeypatch):
    for name in numerics.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=r"numerics=portable needs OMP_NUM_THREADS=2 .* before torch loads"):
        PORTABLE.apply()


def test_what_took_effect_is_read_back_from_the_libraries():
    """oneDNN and MKL say which ISA and branch they run: the record is theirs, not the request echoed."""
    env = {**clean_environment(), "ONEDNN_MAX_CPU_ISA": "AVX", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"}
    script = "import json; from rnnlab.numerics import in_effect; print(json.dumps(in_effect()))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["onednn_isa"] == "Intel AVX" and found["mkl_cbwr"] == "COMPATIBLE" and found["threads"] == 1
    assert found["mode"] == "native" and found["honoured"] and found["environment"]["MKL_CBWR"] == "COMPATIBLE"
    native = numerics.in_effect()  # this process: as the machine and the environment give it
    assert native["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_a_portable_run_records_what_took_effect_and_rerun_names_it(portable_run: Path):
    record = read_provenance(portable_run)
    found = record["platform"]["numerics"]
    assert found["mode"] == "portable" and found["honoured"] and found["threads"] == 2
    assert found["environment"] == PORTABLE.environment() == found["requested"]
    assert found["aten_cpu_capability"] == "AVX2" and found["onednn_isa"] == "Intel AVX2"
    assert found["mkl_cbwr"] == "COMPATIBLE"
    # the same run folder as named, with the restart's command (the folder pinned) recorded
    assert (portable_run / "metrics.json").is_file() and "numerics=portable" in (
        portable_run / "command.txt"
    ).read_text()
    native = {**found, "mode": "native", "mkl_cbwr": "OFF"}
    causes = provenance_differences(record, {**record, "platform": {**record["platform"], "numerics": native}})
    assert causes == [("numerics mode", "portable", "native"), ("numerics mkl_cbwr", "COMPATIBLE", "OFF")]
    assert likely_cause(causes).startswith("the numeric code paths")
    older = {**record, "platform": {k: v for k, v in record["platform"].items() if k != "numerics"}}
    assert provenance_differences(older, record) == [("numerics", "not recorded", "portable")]


def test_a_sweep_runs_each_job_under_its_own_numerics(portable_run: Path, tiny_data_dir: Path, tmp_path: Path):
    """native in the sweep's process, portable in a child; the child's run equals the restarted single run."""
    sweep = tmp_path / "sweep"
    proc = train(
        tiny_data_dir, tmp_path / "cache", "numerics=native,portable", f"hydra.sweep.dir={sweep}", multirun=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    native, portable = job_dirs(sweep)
    assert read_provenance(native)["platform"]["numerics"]["environment"] == {}
    assert read_provenance(portable)["platform"]["numerics"]["environment"] == PORTABLE.environment()
    assert (read_metrics(portable) or {}).get("status") == "completed"
    assert outcome(portable) == outcome(portable_run)


def test_a_restart_that_does_not_take_says_so_instead_of_looping(tiny_data_dir: Path, tmp_path: Path):
    request = json.dumps(PORTABLE.unmet(clean_environment()), sort_keys=True)
    env = {**clean_environment(), numerics.REEXEC_MARK: request}  # as if this were the restart already
    proc = train(tiny_data_dir, tmp_path / "cache", "numerics=portable", f"hydra.run.dir={tmp_path / 'r'}", env=env)
    assert proc.returncode == 1 and "still differ after restarting" in proc.stderr


def load_reference() -> dict[str, Any]:
    if not REFERENCE.is_file():
        return {"run": SHORT_RUN + ["numerics=portable"], "records": []}
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def record_this_kind(reference: dict[str, Any], fresh: dict[str, Any]) -> None:
    """Replace this CPU kind's record by the fresh run's (the file keeps every other kind's)."""
    others = [r for r in reference["records"] if (r["cpu"], r["torch"]) != (fresh["cpu"], fresh["torch"])]
    agree = [r["cpu"]["model"] for r in others if r["torch"] == fresh["torch"] and r["outcome"] == fresh["outcome"]]
    reference = {
        "about": "a short numerics=portable run (tests/test_numerics.py SHORT_RUN on the tiny IMDb of "
        "tests/conftest.py), one record per CPU kind; made with: "
        f"{RECORD}=1 python -m pytest tests/test_numerics.py -k reference",
        "run": SHORT_RUN + ["numerics=portable"],
        "records": [*others, {**fresh, "agrees_with": agree}],
    }
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(reference, indent=1, sort_keys=False) + "\n", encoding="utf-8")


def test_a_portable_run_equals_the_reference_of_the_cpu_kinds_that_recorded_it(portable_run: Path):
    record = read_provenance(portable_run)
    fresh = {
        "cpu": cpu_kind(record),
        "torch": torch.__version__,
        "numerics": {k: record["platform"]["numerics"].get(k) for k in numerics.COMPARED},
        "commit": (record.get("code") or {}).get("commit"),
        "date": datetime.now(timezone.utc).date().isoformat(),
        "outcome": outcome(portable_run),
    }
    reference = load_reference()
    if os.environ.get(RECORD):
        record_this_kind(reference, fresh)
        pytest.skip(f"recorded this CPU kind ({fresh['cpu']['model']}) into {REFERENCE}: commit it")
    assert reference["run"] == SHORT_RUN + ["numerics=portable"], f"{REFERENCE} holds another run: record it again"
    same_torch = [r for r in reference["records"] if r["torch"] == fresh["torch"]]
    if not same_torch:
        pytest.skip(f"unverified: {REFERENCE.name} has no record made with torch {fresh['torch']}")
    mine = [r for r in same_torch if r["cpu"] == fresh["cpu"]]
    hint = f"(if a change moved the numbers on purpose, record again: {RECORD}=1 ... -k reference)"
    if mine:
        assert fresh["outcome"] == mine[0]["outcome"], f"this CPU kind no longer repeats its own record {hint}"
        return
    kinds = {json.dumps(r["cpu"], sort_keys=True): r["outcome"] for r in same_torch}
    agreed = list(kinds.values())
    if len(kinds) < 2 or any(o != agreed[0] for o in agreed):
        names = ", ".join(r["cpu"]["model"] or "?" for r in same_torch)
        pytest.skip(
            f"unverified on this CPU kind ({fresh['cpu']}): the reference holds {names}, and the cross-kind "
            f"check waits for two kinds that agree; record this one with {RECORD}=1 and commit it"
        )
    assert fresh["outcome"] == agreed[0], f"this CPU kind differs from the {len(kinds)} kinds that agree {hint}"


def test_the_recorded_cpu_kinds_agree_with_each_other():
    """What docs/configuration.md claims for numerics=portable, as the committed records show it."""
    records = load_reference()["records"]
    if len({json.dumps(r["cpu"], sort_keys=True) for r in records}) < 2:
        pytest.skip(f"unverified: {REFERENCE.name} holds {len(records)} CPU kind(s); two are needed to compare")
    by_torch: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_torch.setdefault(r["torch"], []).append(r)
    for version, group in by_torch.items():
        differ = [r["cpu"]["model"] for r in group if r["outcome"] != group[0]["outcome"]]
        assert not differ, f"with torch {version}, {differ} differ from {group[0]['cpu']['model']}"
