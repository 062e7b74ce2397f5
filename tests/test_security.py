"""Files handed to rnnlab from outside (checkpoints, data, run folders) never run code or escape their folder.

Each hole is tried through the real entry points, the way a stranger's file would reach them:
the side effect must not happen, and the command must end non-zero with one line that says why.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from rnnlab.data.imdb import IMDBDataModule
from rnnlab.data.news import NewsDataModule
from rnnlab.data.textfile import read_text
from rnnlab.errors import DataFormatError
from rnnlab.models.generation import PROMPT_CHUNK
from rnnlab.tasks.train import train

from conftest import CONF_DIR, SCRIPTS, write_tiny_imdb

TINY = (
    "data.val_size=8",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "model.encoder.embed_dim=8",
    "model.encoder.hidden_size=8",
)


class Evil:
    """What a hostile checkpoint pickles: unpickling it runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo PWNED > {self.marker}",))


def pickled_code_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "x": Evil(marker)}, path)
    return path


def plain_dict_checkpoint(path: Path, marker: Path, model_target: str, data_target: str) -> Path:
    """Plain containers only (``weights_only`` reads it), but its run config names what to build."""
    data = {"_target_": data_target, "args": ["touch", str(marker)]}
    torch.save(
        {
            "state_dict": {},
            "hyper_parameters": {"args": ["touch", str(marker)], "vocab_size": 5},
            "rnnlab_config": {"model": {"_target_": model_target}, "data": data},
        },
        path,
    )
    return path


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def classifier_checkpoint(tiny_data_dir, tmp_path_factory) -> str:
    from hydra import compose, initialize_config_dir

    root = tmp_path_factory.mktemp("clf")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=imdb_lstm",
                *TINY,
                f"paths.data_dir={tiny_data_dir}",
                f"paths.cache_dir={root / 'cache'}",
                f"paths.output_dir={root / 'run'}",
                "trainer.accelerator=cpu",
                "trainer.enable_progress_bar=false",
            ],
        )
    return train(cfg)["best_checkpoint"]


def commands(ckpt: Path, data_dir: Path, cache: Path, out: Path, good: str) -> dict[str, list[str]]:
    """Every entry point that opens a checkpoint a user hands it."""
    paths = [f"paths.data_dir={data_dir}", f"paths.cache_dir={cache}"]
    quick = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
    return {
        "generate": ["generate.py", f"ckpt_path={ckpt}", "prompt=The", *paths],
        "eval": ["eval.py", f"ckpt_path={ckpt}", *paths, *quick, f"hydra.run.dir={out / 'eval'}"],
        "ensemble": ["ensemble.py", f"ckpt_paths=[{good},{ckpt}]", *paths, f"hydra.run.dir={out / 'ens'}"],
        "pretrained": [
            "train.py",
            "experiment=imdb_finetune",
            f"model.pretrained={ckpt}",
            *TINY,
            *paths,
            *quick,
            f"hydra.run.dir={out / 'ft'}",
        ],
        "resume": [
            "train.py",
            "experiment=imdb_lstm",
            f"ckpt_path={ckpt}",
            *TINY,
            *paths,
            *quick,
            f"hydra.run.dir={out / 'r'}",
        ],
    }


@pytest.mark.parametrize("kind", ["pickled code", "foreign model class"])
def test_no_entry_point_runs_code_from_a_checkpoint(kind, tiny_data_dir, classifier_checkpoint, tmp_path):
    marker = tmp_path / "pwned.txt"
    ckpt = tmp_path / "evil.ckpt"
    if kind == "pickled code":
        pickled_code_checkpoint(ckpt, marker)
    else:
        plain_dict_checkpoint(ckpt, marker, "subprocess.Popen", "rnnlab.data.imdb.IMDBDataModule")
    cache = tmp_path / "cache"
    for name, cmd in commands(ckpt, tiny_data_dir, cache, tmp_path, classifier_checkpoint).items():
        proc = run_script(*cmd, cwd=tmp_path)
        assert not marker.exists(), f"{name}: the checkpoint ran code"
        assert proc.returncode != 0, f"{name}: exited 0"
        last = proc.stderr.strip().splitlines()[-1]
        if kind != "pickled code" and name == "resume":  # Lightning builds nothing a checkpoint names, and
            assert (
                last == f"error: {ckpt}: not a training checkpoint (it has no 'pytorch-lightning_version'); "
                "continue from <run>/checkpoints/last.ckpt or a best-*.ckpt that train.py wrote"
            ), last
            assert "run not started:" in proc.stdout + proc.stderr and "resume=true" not in proc.stdout + proc.stderr
            continue  # a file it could not continue from is refused by name before anything is built
        assert last.startswith("error: ") and "refused" in last and str(ckpt) in last, (name, proc.stderr[-1500:])
        if kind == "pickled code":
            assert "trust_checkpoint=true" in last and "posix.system" in last, (name, last)
        else:
            assert "subprocess.Popen" in last and "not one of rnnlab's own" in last, (name, last)


def test_a_foreign_data_class_is_refused_before_anything_is_built(tmp_path):
    """Every entry point opens checkpoints through Checkpoint.open, which checks both classes first."""
    from rnnlab.runs.checkpoints import Checkpoint, UntrustedCheckpointError

    marker = tmp_path / "pwned.txt"
    ckpt = plain_dict_checkpoint(
        tmp_path / "evil.ckpt", marker, "rnnlab.models.classifier.SequenceClassifier", "subprocess.Popen"
    )
    with pytest.raises(UntrustedCheckpointError, match=r"data._target_='subprocess.Popen', which is not one of"):
        Checkpoint.open(ckpt)
    assert not marker.exists()


def test_trust_is_an_explicit_opt_in_per_command(tmp_path):
    """The escape hatch for a file a user made: ``trust_checkpoint=true`` unpickles it (and says so)."""
    marker = tmp_path / "ran.txt"
    ckpt = pickled_code_checkpoint(tmp_path / "mine.ckpt", marker)
    proc = run_script("generate.py", f"ckpt_path={ckpt}", "trust_checkpoint=true", cwd=tmp_path)
    assert marker.exists() and proc.returncode != 0  # it ran: the user asked; then it holds no rnnlab config
    assert "fully unpickled" in proc.stdout + proc.stderr and "holds no rnnlab run config" in proc.stderr


def test_archive_members_never_reach_the_disk(tmp_path):
    """A tar member named ``../x`` (or a link pointing out) is read in memory or skipped, never written."""
    base = write_tiny_imdb(tmp_path / "src", per_label=4)
    archive = tmp_path / "data" / "imdb" / "aclImdb_v1.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(base, arcname="aclImdb")
        for name in ("../escape.txt", "aclImdb/../../escape2/train/pos/99_9.txt", "/tmp/abs_escape.txt"):
            payload = b"great great great"
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo("aclImdb/train/pos/link_1.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    before = set(tmp_path.rglob("*"))
    dm = IMDBDataModule(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), val_size=2)
    dm.setup()
    written = {p for p in set(tmp_path.rglob("*")) - before if "cache" not in p.parts}
    assert written == set() and not Path("/tmp/abs_escape.txt").exists()
    assert (
        len(dm.datasets["train"]) + len(dm.datasets["val"]) == 4 * 2 + 1
    )  # the ../ member read as a review, in memory


def test_an_imdb_review_of_megabytes_is_refused_by_name(tmp_path):
    base = write_tiny_imdb(tmp_path / "data", per_label=4)
    (base / "train" / "pos" / "7_9.txt").write_bytes(b"great " * (2 << 20))  # 12 MB
    dm = IMDBDataModule(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), val_size=2)
    with pytest.raises(DataFormatError, match=r"train/pos/7_9.txt is 12,582,912 bytes.*data.max_review_bytes"):
        dm.prepare_data()


def test_a_news_line_of_hundreds_of_megabytes_is_refused_after_reading_one_megabyte(tmp_path, monkeypatch):
    path = tmp_path / "news.json"
    with open(path, "w") as handle:
        handle.write(json.dumps({"short_description": "fine"}) + "\n")
        handle.write('{"short_description": "' + "x" * (3 << 20) + '"}\n')  # 3 MB on one line
    reads: list[int] = []
    real_open = open

    def counting_open(*args, **kwargs):
        handle = real_open(*args, **kwargs)
        readline = handle.readline

        def spy(limit=-1):
            line = readline(limit)
            reads.append(len(line))
            return line

        handle.readline = spy
        return handle

    monkeypatch.setattr("builtins.open", counting_open)
    with pytest.raises(DataFormatError, match=r"line 2 is longer than 1,048,576 bytes"):
        NewsDataModule(path=str(path), cache_dir=str(tmp_path / "c")).prepare_data()
    assert max(reads) <= (1 << 20) + 1  # the long line was never read whole


def test_a_binary_file_is_not_a_novel(tmp_path):
    exe = tmp_path / "a.bin"
    exe.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(64))
    with pytest.raises(DataFormatError, match="NUL bytes at offset 7: a binary file"):
        read_text(exe)
    exe.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataFormatError, match="not valid utf-8 at byte offset 128"):
        read_text(exe)


def test_a_prompt_of_a_megabyte_is_read_in_bounded_pieces():
    from rnnlab.data.codec import TextCodec
    from rnnlab.models.language_model import LanguageModel

    torch.manual_seed(0)
    model = LanguageModel(vocab_size=3, encoder={"embed_dim": 4, "hidden_size": 4}).eval()
    model.codec = TextCodec(["a", "b", " "], level="char")
    widths = []
    step = model.step
    model.step = lambda tokens, state: (widths.append(tokens.size(1)), step(tokens, state))[1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a million one-step recurrences: thread hand-offs would cost more than the math
    try:
        text = model.generate_text("ab " * 350_000, 5, seed=1)
    finally:
        torch.set_num_threads(threads)
    assert len(text) == 5 and max(widths) == PROMPT_CHUNK and sum(widths) == 1_050_000 + 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2, 3]", "holds a JSON list, not the object rnnlab writes"),
        ('{"status": "completed", "test/acc": {"__class__": "os.system"}}', "'test/acc' is not a plain value"),
        ('{"status": "comp', "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
        ('{"pad": "' + "x" * (2 << 20) + '"}', "not a file rnnlab wrote"),
    ],
)
def test_a_hostile_metrics_file_is_an_error_for_the_report_and_resume(content, message, tmp_path):
    from rnnlab.errors import RnnlabError
    from rnnlab.runs.resume import previous_outcome

    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (job / "metrics.json").write_text(content)
    proc = run_script("sweep_report.py", str(tmp_path / "sweep"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr[-800:]
    with pytest.raises(RnnlabError, match=message):
        previous_outcome(job, ["seed=1"])


def test_overrides_that_are_not_a_list_of_strings_are_refused(tmp_path):
    from rnnlab.errors import RnnlabError
    from rnnlab.runs.folder import read_overrides

    (tmp_path / ".hydra").mkdir()
    for text in ("!!python/object/apply:os.system ['touch pwned']", "{a: 1}", "- [nested]"):
        (tmp_path / ".hydra" / "overrides.yaml").write_text(text)
        with pytest.raises(RnnlabError, match="not valid YAML|not a list of key=value strings"):
            read_overrides(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_every_target_of_the_packaged_configs_is_allowed_and_foreign_ones_are_not():
    from rnnlab.runs.targets import foreign_targets, is_allowed

    for path in CONF_DIR.rglob("*.yaml"):
        if path.relative_to(CONF_DIR).parts[0] == "hydra":
            continue  # Hydra's own settings (sweeper, launcher): never part of a job's saved config
        job = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "hydra"}  # rerun checks jobs
        assert foreign_targets(job) == [], path
    for target in ("subprocess.Popen", "os.system", "torch.load", "rnnlab.runs.checkpoints.load_checkpoint"):
        assert not is_allowed(target), target
    assert not is_allowed("torch.optim._multi_tensor.x") and is_allowed("torch.optim.lr_scheduler.OneCycleLR")
    # a run folder made before rnnlab.training replays at its own commit, where the callbacks sat in the root
    assert is_allowed("rnnlab.callbacks.NonFiniteLossGuard") and is_allowed("rnnlab.training.ddp.ForkDDPStrategy")
    assert not is_allowed("rnnlab.training.ddp.release_openmp_threads")
