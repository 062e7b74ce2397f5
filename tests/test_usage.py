"""Using a trained model and finding runs, as a newcomer does: named folders, the summary at the end,
predictions on new text, pictures of a classifier, and commands that leave the current folder alone."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rnnlab.cli import dir_suffix
from rnnlab.errors import ConfigError
from rnnlab.reporting.curves import job_label

from conftest import SCRIPTS, TINY_NOVEL_LM

TRAIN = ["data.val_size=8", "data.batch_size=8", "trainer.max_epochs=2", "trainer.enable_progress_bar=false"]


def script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True, cwd=cwd)
    return proc


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tmp_path_factory) -> dict[str, Path]:
    """A classifier and a char LM trained by scripts/train.py into a log folder of their own."""
    root = tmp_path_factory.mktemp("usage")
    common = [
        f"paths.data_dir={tiny_data_dir}",
        f"paths.cache_dir={root / 'cache'}",
        f"paths.log_dir={root / 'outputs'}",
    ]
    clf = script("train.py", "experiment=imdb_lstm", *TRAIN, "seed=3", *common, cwd=root)
    assert clf.returncode == 0, clf.stderr[-2000:]
    lm = script(
        "train.py",
        *TINY_NOVEL_LM,
        "trainer.enable_progress_bar=false",
        *common,
        cwd=root,
    )
    assert lm.returncode == 0, lm.stderr[-2000:]
    (clf_run,) = (root / "outputs" / "imdb_lstm").iterdir()
    (lm_run,) = (root / "outputs" / "novel_lstm").iterdir()
    return {"root": root, "clf": clf_run, "lm": lm_run, "clf_stdout": clf.stdout, "data": tiny_data_dir}


def test_run_folders_are_named_and_the_run_ends_with_a_summary(trained):
    run = trained["clf"]
    assert run.parent.name == "imdb_lstm" and run.name.startswith("20") and "seed-3" in run.name
    tail = trained["clf_stdout"].strip().splitlines()[-4:]
    assert tail[0] == f"run completed:  {run}"
    assert tail[1].startswith(f"best checkpoint:  {run}/checkpoints/best-") and "(val/acc " in tail[1]
    assert tail[2].startswith("test:  test/acc ") and tail[3] == f"tensorboard:  tensorboard --logdir {run.parent}"


def test_a_failed_run_ends_with_the_error_and_the_resume_command(trained, tmp_path):
    paths = [f"paths.data_dir={trained['data']}", f"paths.cache_dir={trained['root'] / 'cache'}"]
    proc = script(
        "train.py",
        "experiment=imdb_lstm",
        "model.encoder.hidden_size=0",
        *TRAIN,
        f"paths.log_dir={tmp_path}",
        *paths,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    tail = proc.stdout.strip().splitlines()[-3:]
    assert tail[0].startswith("run failed:  ") and "model.encoder.hidden_size must be a positive number" in tail[1]
    assert tail[2].startswith("resume:  python ") and "resume=true hydra.run.dir=" in tail[2]


def test_the_classifier_pictures_are_in_the_run_folder(trained):
    for name in ("roc", "precision_recall", "confusion_matrix"):
        assert (trained["clf"] / "plots" / f"test_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_a_text_a_file_and_a_csv_column_with_one_checkpoint_or_two(trained, tmp_path):
    ckpt = next((trained["clf"] / "checkpoints").glob("best-*.ckpt"))
    paths = [f"paths.data_dir={trained['data']}", f"paths.cache_dir={trained['root'] / 'cache'}"]
    one = script("predict.py", f"ckpt_path={ckpt}", "text='A great, wonderful film.'", *paths, cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    label, probability = one.stdout.split()
    assert label in ("negative", "positive") and 0.5 <= float(probability) <= 1.0

    (tmp_path / "reviews.txt").write_text("A great movie\n\nAn awful, boring plot\n")
    lines = script("predict.py", f"ckpt_path={ckpt}", "input=reviews.txt", *paths, cwd=tmp_path)
    table = pd.read_csv(io.StringIO(lines.stdout))
    assert list(table.columns) == ["text", "label", "probability", "p_negative", "p_positive"] and len(table) == 2
    assert ((table.p_negative + table.p_positive - 1).abs() < 1e-5).all()

    with open(tmp_path / "reviews.csv", "w", newline="") as out:
        csv.writer(out).writerows([["id", "review"], ["7", "A great movie"], ["9", "An awful, boring plot"]])
    both = f"ckpt_paths=[{ckpt},{ckpt}]"  # an ensemble of a model with itself: its own probabilities
    made = script("predict.py", both, "input=reviews.csv", "column=review", "output=out.csv", *paths, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    written = pd.read_csv(tmp_path / "out.csv", dtype={"id": str})
    assert list(written["id"]) == ["7", "9"] and list(written["label"]) == list(table["label"])
    assert (written["probability"] - table["probability"]).abs().max() < 1e-5

    wrong = script(
        "predict.py", f"ckpt_path={next((trained['lm'] / 'checkpoints').glob('*.ckpt'))}", "text=x", cwd=tmp_path
    )
    assert wrong.returncode == 1 and "needs a classifier" in wrong.stderr


def test_eval_generate_and_predict_write_nothing_into_the_current_folder(trained, tmp_path):
    clf = next((trained["clf"] / "checkpoints").glob("best-*.ckpt"))
    lm = next((trained["lm"] / "checkpoints").glob("best-*.ckpt"))
    paths = [f"paths.data_dir={trained['data']}", f"paths.cache_dir={trained['root'] / 'cache'}"]
    here = tmp_path / "cwd"
    here.mkdir()
    assert script("eval.py", f"ckpt_path={clf}", "trainer.enable_progress_bar=false", *paths, cwd=here).returncode == 0
    assert script("generate.py", f"ckpt_path={lm}", "max_new_tokens=20", *paths, cwd=here).returncode == 0
    assert script("predict.py", f"ckpt_path={clf}", "text=great", *paths, cwd=here).returncode == 0
    assert list(here.iterdir()) == []
    assert list((trained["clf"] / "eval").glob("*/metrics.json"))  # eval's record sits beside the run it measured


def test_report_legends_name_overrides_not_paths():
    row = pd.Series({"model.pretrained": "/home/me/outputs/lm/2026/checkpoints/best-004.ckpt", "seed": "1"})
    assert job_label(row, ["model.pretrained", "seed"]) == "model.pretrained=best-004.ckpt"


def test_legends_and_folder_names_show_a_drawn_float_to_four_digits():
    """A search draws values like 0.006185222264775259; a reader needs 0.006185, in the legend and the folder."""
    row = pd.Series({"model.optimizer.lr": "0.006185222264775259", "model.pooling": "concat"})
    assert (
        job_label(row, ["model.optimizer.lr", "model.pooling"]) == "model.optimizer.lr=0.006185, model.pooling=concat"
    )
    assert dir_suffix("model.optimizer.lr=0.006185222264775259,seed=2") == "_model.optimizer.lr-0.006185+seed-2"
    assert dir_suffix("data.reverse=true,trainer.max_epochs=6") == "_data.reverse-true+trainer.max_epochs-6"


def test_a_csv_row_with_unquoted_commas_is_an_error_not_a_silent_index(tmp_path):
    """pandas would make the first field an index and hand predict an empty text for that row."""
    from omegaconf import OmegaConf

    from rnnlab.tasks.predict import read_inputs

    bad = tmp_path / "reviews.csv"
    bad.write_text("text\nA wonderful, moving film.\nDull.\n")
    with pytest.raises(ConfigError, match=r"reviews.csv: a row has more fields than the header; .* double quotes"):
        read_inputs(OmegaConf.create({"input": str(bad), "column": None}))
    bad.write_text('text\n"A wonderful, moving film."\nDull.\n')
    frame, column = read_inputs(OmegaConf.create({"input": str(bad), "column": None}))
    assert frame[column].tolist() == ["A wonderful, moving film.", "Dull."]
