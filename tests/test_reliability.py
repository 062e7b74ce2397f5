"""Failures a user meets: each ends in an actionable message, and nothing finished is lost."""

import hashlib
import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch

from rnnlab.data.news import NewsDataModule
from rnnlab.data.sources import RemoteFile, find_or_download
from rnnlab.errors import ConfigError, DataNotFoundError, RnnlabError
from rnnlab.tasks.train import train
from rnnlab.training.callbacks import NonFiniteLossError

from conftest import SCRIPTS

QUICK = ("experiment=imdb_lstm", "data.val_size=8", "data.batch_size=4")


def test_non_finite_loss_stops_with_step_and_keeps_a_finite_checkpoint(compose_cfg, tmp_path):
    run_dir = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match=r"became nan at step \d+ \(last finite loss [\d.]+ at step \d+\)"):
        train(compose_cfg(*QUICK, "model.optimizer.lr=1e30", "trainer.max_epochs=3", output_dir=run_dir))
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and "NonFiniteLossError" in record["error"]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


def test_sigterm_leaves_a_loadable_checkpoint_and_the_run_continues(tiny_data_dir, compose_cfg, tmp_path):
    run_dir = tmp_path / "term"
    cmd = [
        sys.executable,
        str(SCRIPTS / "train.py"),
        *QUICK,
        f"paths.data_dir={tiny_data_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=100000",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "resume with resume=true" in stderr
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and "SIGTERM" in record["error"]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] > 0
    last = run_dir / "checkpoints" / "last.ckpt"
    continued = train(
        compose_cfg(
            *QUICK, f"ckpt_path={last}", f"trainer.max_epochs={saved['epoch'] + 2}", output_dir=tmp_path / "continued"
        )
    )
    assert continued["status"] == "completed"


def test_unwritable_output_folder_fails_before_training(compose_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot write to the output folder"):
        train(compose_cfg(*QUICK, output_dir=blocker / "run"))


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on loopback, as the canonical download sites serve theirs."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "site"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_with_a_wrong_hash_is_refused_and_a_good_one_recovers(served, tmp_path):
    folder, url = served
    payload = b"payload" * 1000
    (folder / "file.bin").write_bytes(payload)
    target_dir = tmp_path / "data" / "x"
    bad = RemoteFile(url=f"{url}/file.bin", filename="file.bin", md5="0" * 32)
    with pytest.raises(DataNotFoundError, match=r"(?i)md5 hash.*does not match.*truncated or corrupt"):
        find_or_download([target_dir / "file.bin"], bad, "test file")
    assert not target_dir.exists()  # nothing half-written kept, not even the folder
    good = RemoteFile(url=f"{url}/file.bin", filename="file.bin", md5=hashlib.md5(payload).hexdigest())
    path = find_or_download([target_dir / "file.bin"], good, "test file")
    assert path.read_bytes() == payload and sorted(p.name for p in target_dir.iterdir()) == ["file.bin"]


def test_vocabulary_of_size_zero_is_a_config_error():
    with pytest.raises(ConfigError, match="data.max_words must be at least 2"):
        NewsDataModule(max_words=1)


def test_generate_refuses_a_classifier_checkpoint(compose_cfg, tmp_path):
    from rnnlab.tasks.generate import generate

    metrics = train(compose_cfg(*QUICK, "trainer.max_epochs=1", output_dir=tmp_path / "clf"))
    cfg = compose_cfg(f"ckpt_path={tmp_path / 'clf' / 'checkpoints' / 'last.ckpt'}", config_name="generate")
    with pytest.raises(RnnlabError, match="SequenceClassifier checkpoint.*needs a language model"):
        generate(cfg)
    assert math.isfinite(metrics["val/loss"])


def test_missing_checkpoint_is_named(compose_cfg, tmp_path):
    from rnnlab.tasks.evaluate import evaluate

    with pytest.raises(RnnlabError, match=r"checkpoint not found: .*nope.ckpt"):
        evaluate(compose_cfg(f"ckpt_path={tmp_path / 'nope.ckpt'}", config_name="eval", output_dir=tmp_path / "e"))
