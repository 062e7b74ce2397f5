"""Published tables are rendered from run-folder summaries, and the committed ones are current."""

import json
import subprocess
import sys

from rnnlab.cli.results import main
from rnnlab.reporting.results import render, render_table, summarize, without_local_paths

from conftest import REPO, SCRIPTS


def test_committed_tables_are_what_the_summaries_render():
    assert main(["--root", str(REPO), "render", "--check"]) == 0


def test_a_run_folder_becomes_a_table_row_and_a_stale_table_is_found(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, str(SCRIPTS / "train.py"), "experiment=imdb_lstm", "data.val_size=8", "trainer.max_epochs=1"]
    paths = [f"paths.data_dir={tiny_data_dir}", f"paths.cache_dir={tmp_path / 'c'}", f"hydra.run.dir={run}"]
    assert subprocess.run([*cmd, "trainer.enable_progress_bar=false", *paths], capture_output=True).returncode == 0
    docs = tmp_path / "docs" / "results"
    docs.mkdir(parents=True)
    (docs / "tables.yaml").write_text(
        "imdb:\n  columns: [[test acc, test/acc, pct], [best val acc, best_score, pct]]\n"
    )
    page = tmp_path / "docs" / "imdb.md"
    page.write_text("# IMDb\n\n<!-- results:imdb -->\nold\n<!-- /results -->\n\nprose after\n")
    assert main(["--root", str(tmp_path), "add", str(run), "--table", "imdb", "--row", "tiny lstm"]) == 0
    summary = json.loads((docs / "runs" / "imdb" / "tiny-lstm.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert summary["metrics"]["test/acc"] == metrics["test/acc"] and summary["source"] == "run folder"
    assert summary["command"].startswith("python scripts/train.py experiment=imdb_lstm data.val_size=8")
    assert len(summary["commit"]) == 40 and summary["machine"] and summary["date"]

    assert render(docs, [page], check=True) == [page]  # "old" is stale
    assert main(["--root", str(tmp_path), "render"]) == 0
    text = page.read_text()
    assert f"{100 * metrics['test/acc']:.2f} %" in text and "| tiny lstm |" in text and text.endswith("prose after\n")
    assert main(["--root", str(tmp_path), "render", "--check"]) == 0
    summary["metrics"]["test/acc"] = 0.123
    (docs / "runs" / "imdb" / "tiny-lstm.json").write_text(json.dumps(summary))
    assert main(["--root", str(tmp_path), "render", "--check"]) == 1


def test_a_row_command_names_a_checkpoint_by_its_run_not_by_a_local_path():
    assert without_local_paths("model.pretrained=/work/runs/lm_fwd/checkpoints/best-000-002584.ckpt") == (
        "model.pretrained=<lm_fwd>/checkpoints/best-000-002584.ckpt"
    )
    assert without_local_paths("data.filename=/data/big.txt") == "data.filename=big.txt"
    assert without_local_paths("model.encoder.cell=gru") == "model.encoder.cell=gru"


def test_a_long_command_is_rendered_whole():
    command = "python scripts/train.py " + " ".join(f"+model.setting_{i}=1" for i in range(12))
    summary = {"row": "r", "command": command, "metrics": {}, "machine": "m", "source": "run folder", "date": "d"}
    assert len(command) > 200 and f"`{command}`" in render_table({"columns": []}, [summary])


def test_a_run_continued_at_another_commit_names_both_commits(tmp_path):
    first, second = "a" * 40, "b" * 40
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "completed", "test/acc": 0.9, "wall_time_s": 5.0}))
    process = {"command": ["python", "scripts/train.py"], "started": "2026-12-01T00:00:00+00:00"}
    earlier = [{**process, "code": {"commit": first}}, {**process, "code": {"commit": second}}]
    record = {**process, "code": {"commit": second}, "earlier_processes": earlier}
    (tmp_path / "provenance.json").write_text(json.dumps(record))
    summary = summarize(tmp_path, "t", "r", 0, None)
    assert summary["commit"] == second and summary["earlier_commits"] == [first]
    assert "| aaaaaaa, then bbbbbbb |" in render_table({"columns": []}, [summary])
