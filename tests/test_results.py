"""Published tables: a declared list of rows, one record per seed, tables rendered from the records."""

import json

import pytest

from rnnlab.cli.results import main
from rnnlab.errors import RnnlabError
from rnnlab.reporting.published import load_rows
from rnnlab.reporting.results import figure, load_records, render_table, summarize, without_local_paths

from conftest import REPO

DOCS = REPO / "docs" / "results"
MIGRATED = 63  # the records published before the declared list, each under its new name


def test_committed_tables_are_what_the_records_render_and_every_record_is_declared():
    assert main(["--root", str(REPO), "render", "--check"]) == 0


def test_every_record_published_before_the_list_is_still_there():
    records = load_records(DOCS)
    migrated = [r for r in records.values() if "published_as" in r]
    assert len(migrated) == MIGRATED
    assert all(r["row"] in {row.name for row in load_rows(DOCS)} for r in records.values())


def test_a_row_is_trained_seed_by_seed_recorded_and_rendered_as_mean_and_std(tiny_data_dir, tmp_path):
    docs = tmp_path / "docs" / "results"
    docs.mkdir(parents=True)
    (docs / "tables.yaml").write_text(
        "imdb:\n  columns: [[test acc, test/acc, pct], [best val acc, best_score, pct]]\n"
    )
    (docs / "published.yaml").write_text(
        "- name: tiny lstm\n  table: imdb\n  preset: imdb_lstm\n  seeds: [1, 2]\n"
        "  overrides: [data.val_size=8, trainer.max_epochs=1, paths.data_dir=<data>, paths.cache_dir=<cache>]\n"
    )
    page = tmp_path / "docs" / "imdb.md"
    page.write_text("# IMDb\n\n<!-- results:imdb -->\nold\n<!-- /results -->\n\nprose after\n")
    root, runs = ["--root", str(tmp_path)], tmp_path / "runs"
    run = [*root, "run", "tiny lstm", "--runs-dir", str(runs), "--with", f"data={tiny_data_dir}"]
    assert main(run) == 2  # <cache> is not given: refused before anything runs
    assert not runs.exists()
    run += ["--with", f"cache={tmp_path / 'c'}"]
    assert main(run) == 0
    records, key = load_records(docs), load_rows(docs)[0].key
    assert sorted(records) == [f"imdb/imdb_lstm-{key}-s{s}.json" for s in (1, 2)]  # table/preset-hash-seed
    first = records[f"imdb/imdb_lstm-{key}-s1.json"]
    metrics = json.loads((runs / f"imdb_lstm-{key}-s1" / "metrics.json").read_text())
    assert first["metrics"]["test/acc"] == metrics["test/acc"] and first["source"] == "run folder"
    assert first["command"].startswith("python scripts/train.py experiment=imdb_lstm data.val_size=8")
    assert len(first["commit"]) == 40 and first["machine"] and [r["seed"] for r in records.values()] == [1, 2]

    assert main([*root, "render", "--check"]) == 1  # "old" is stale
    assert main([*root, "render"]) == 0 and main([*root, "render", "--check"]) == 0
    text = page.read_text()
    accs = [r["metrics"]["test/acc"] for r in records.values()]
    assert "| tiny lstm | `python scripts/train.py -m experiment=imdb_lstm" in text and "| n = 2 |" in text
    assert figure(accs, "pct") in text and text.endswith("prose after\n")

    # resumable: a seed with a record is not trained again; one whose folder finished is recorded again
    (docs / "runs" / sorted(records)[1]).unlink()
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("metrics.json")}
    assert main(run) == 0 and load_records(docs) == records
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("metrics.json")} == before

    # a folder recorded by hand does not silently take the place of a seed's record
    adding = [*root, "add", str(runs / f"imdb_lstm-{key}-s1"), "--row", "tiny lstm", "--note", "again"]
    assert main(adding) == 2 and load_records(docs) == records
    assert main([*adding, "--replace"]) == 0
    assert load_records(docs)[f"imdb/imdb_lstm-{key}-s1.json"]["note"] == "again"
    (docs / "runs" / "imdb" / "stray.json").write_text(json.dumps(first))
    assert main([*root, "render", "--check"]) == 1  # a record no row declares


def test_one_seed_is_its_figure_and_several_are_mean_and_sample_std():
    assert figure([0.9], "pct") == "90.00 %"
    assert figure([0.9, 0.92], "pct") == "91.00 ± 1.41 %"
    assert figure([1.0, 2.0, 3.0], "3") == "2.000 ± 1.000"


def test_a_declared_list_with_a_bad_row_is_refused_in_one_line(tmp_path):
    (tmp_path / "published.yaml").write_text("- name: r\n  table: t\n  preset: p\n  seed: [1]\n")
    with pytest.raises(RnnlabError, match=r"row 'r' has 'seed'; a row has name, table") as raised:
        load_rows(tmp_path)
    assert "\n" not in str(raised.value)
    (tmp_path / "published.yaml").write_text("- {name: r, table: t, preset: p}\n- {name: r, table: t, preset: q}\n")
    with pytest.raises(RnnlabError, match="declared twice"):
        load_rows(tmp_path)


def test_a_row_command_names_a_checkpoint_by_its_run_not_by_a_local_path():
    assert without_local_paths("model.pretrained=/work/runs/lm_fwd/checkpoints/best-000-002584.ckpt") == (
        "model.pretrained=<lm_fwd>/checkpoints/best-000-002584.ckpt"
    )
    assert without_local_paths("data.filename=/data/big.txt") == "data.filename=big.txt"
    assert without_local_paths("model.encoder.cell=gru") == "model.encoder.cell=gru"


def test_a_long_command_is_rendered_whole(tmp_path):
    (tmp_path / "published.yaml").write_text(
        "- {name: r, table: t, preset: p, overrides: [" + ", ".join(f"+model.setting_{i}=1" for i in range(12)) + "]}\n"
    )
    (row,) = load_rows(tmp_path)
    record = {"metrics": {}, "machine": "m", "source": "run folder", "date": "d", "commit": "c"}
    assert len(row.command()) > 200 and f"`{row.command()}`" in render_table({"columns": []}, [(row, [record])])


def test_a_run_continued_at_another_commit_names_both_commits(tmp_path):
    first, second = "a" * 40, "b" * 40
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "completed", "test/acc": 0.9, "wall_time_s": 5.0}))
    process = {"command": ["python", "scripts/train.py"], "started": "2026-12-01T00:00:00+00:00"}
    earlier = [{**process, "code": {"commit": first}}, {**process, "code": {"commit": second}}]
    record = {**process, "code": {"commit": second}, "earlier_processes": earlier}
    (tmp_path / "provenance.json").write_text(json.dumps(record))
    summary = summarize(tmp_path, "t", "r")
    assert summary["commit"] == second and summary["earlier_commits"] == [first]
    (tmp_path / "published.yaml").write_text("- {name: r, table: t, preset: p}\n")
    (row,) = load_rows(tmp_path)
    assert "| aaaaaaa, then bbbbbbb |" in render_table({"columns": []}, [(row, [summary])])


def test_every_results_page_reads_in_a_minute():
    sizes = {page.name: page.stat().st_size for page in DOCS.glob("*.md")}
    assert sizes and all(size <= 12 * 1024 for size in sizes.values()), sizes
