"""Smoke test of the benchmark harness: 2 timed steps on tiny data; no timing assertions."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import REPO, tar_folder

# a developer tool outside the installed package: loaded from its file, as `python bench/benchmark.py` runs it
_spec = importlib.util.spec_from_file_location("benchmark", REPO / "bench" / "benchmark.py")
benchmark = sys.modules["benchmark"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark)
main = benchmark.main

STUB_REFERENCE = """
import json, sys
task = sys.argv[1]
key = {"news": "target_tokens_per_s", "novel": "chars_per_s", "imdb": "reviews_per_s"}[task]
print(json.dumps({"task": task, key: 100.0, "threads": 1}))
"""


def run_benchmark(tmp_path: Path, data_dir: Path, reference: Path, only: str) -> dict:
    out = tmp_path / "bench.json"
    docs = tmp_path / "benchmarks.md"
    code = main(
        [
            "--reference",
            str(reference),
            "--data-dir",
            str(data_dir),
            "--only",
            only,
            "--steps",
            "3",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--out",
            str(out),
            "--docs",
            str(docs),
            "--override",
            "imdb:data.val_size=8",
            "--override",
            "novel:data.filename=tiny.txt",
        ]
    )
    assert code == 0
    table = docs.read_text()
    header = next(line for line in table.splitlines() if line.startswith("| workload"))
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| workload")]
    assert len(rows) == len(only.split(",")) and all(r.count("|") == header.count("|") for r in rows)
    return json.loads(out.read_text())


def test_benchmark_table_with_a_stub_reference(tiny_data_dir, tmp_path):
    reference = tmp_path / "stub_reference.py"
    reference.write_text(STUB_REFERENCE)
    result = run_benchmark(tmp_path, tiny_data_dir, reference, "imdb,novel")
    for row in result["rows"]:
        assert row["reference_per_s"] == 100.0
        assert row["rnnlab_per_s"] > 0 and row["bare_per_s"] > 0 and row["rnnlab"]["steps_timed"] == 2
        assert row["ratio"] == pytest.approx(row["rnnlab_per_s"] / 100.0)
        assert row["prepare_first_s"] > 0 and row["rnnlab_peak_rss_mb"] > 0
    assert result["machine"]["torch"]


def test_benchmark_with_the_real_reference_loop(tiny_data_dir, tmp_path):
    reference = REPO / "bench" / "seed_reference.py"
    imdb = tiny_data_dir / "imdb"
    if not (imdb / "aclImdb_v1.tar.gz").exists():
        tar_folder(imdb / "aclImdb", tmp_path / "aclImdb_v1.tar.gz").rename(imdb / "aclImdb_v1.tar.gz")
    result = run_benchmark(tmp_path, tiny_data_dir, reference, "imdb")
    assert result["rows"][0]["reference"]["reviews_per_s"] > 0
