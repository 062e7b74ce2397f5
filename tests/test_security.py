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

from conftest import CONF_DIR, SCRIPTS, TINY_NOVEL_LM, write_tiny_imdb, write_tiny_novel

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


def test_a_recorded_config_that_is_not_a_mapping_is_refused_before_resume_compares_it(tmp_path):
    from rnnlab.errors import RnnlabError
    from rnnlab.runs.resume import previous_outcome

    for text in ("!!python/object/apply:os.system ['touch pwned']", "- a list", "a: [unclosed"):
        (tmp_path / "config_resolved.yaml").write_text(text)
        with pytest.raises(RnnlabError, match="config_resolved.yaml.*(not valid YAML|not the mapping rnnlab writes)"):
            previous_outcome(tmp_path, None, {"seed": 1})
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
    # a family's name is checked by what it resolves to: a path through a module's imports is not a member
    for alias in ("lightning.pytorch.callbacks.model_checkpoint.os.system", "torch.optim.sgd.torch.load"):
        assert not is_allowed(alias), alias
    assert not is_allowed("lightning.pytorch.loggers.WandbLogger")  # a logger that sends the run away
    assert is_allowed("lightning.pytorch.callbacks.EarlyStopping") and is_allowed("torch.optim.swa_utils.SWALR")
    # a run folder made before rnnlab.training replays at its own commit, where the callbacks sat in the root
    assert is_allowed("rnnlab.callbacks.NonFiniteLossGuard") and is_allowed("rnnlab.training.ddp.ForkDDPStrategy")
    assert not is_allowed("rnnlab.training.ddp.release_openmp_threads")


# --- run folders handed to rerun.py: each craft is one job of a "sweep"; one command checks them all --------

QUICK_LM = (*TINY_NOVEL_LM, "model.sample_prompt=null", "trainer.enable_progress_bar=false")


def quiet_env(home: Path) -> dict[str, str]:
    """A user whose home is ``home``, with no cache folder of their own set: rnnlab's default applies
    (matplotlib, imported by the reports, keeps its font cache beside ``home``, not in it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RNNLAB_CACHE_DIR", "XDG_CACHE_HOME")}
    return {**env, "HOME": str(home), "MPLCONFIGDIR": str(home.with_name(f"{home.name}-matplotlib"))}


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    """A finished tiny char-LM run folder, made by scripts/train.py."""
    root = tmp_path_factory.mktemp("made")
    write_tiny_novel(root / "data")
    run = root / "run"
    args = [f"paths.data_dir={root / 'data'}", f"paths.cache_dir={root / 'cache'}", f"hydra.run.dir={run}"]
    proc = run_script("train.py", *QUICK_LM, *args, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


def _hydra(**node):
    return lambda c, m: c.update(hydra=node)


def _set(dotted: str, value):
    def mutate(config: dict, marker: Path) -> None:
        *parents, leaf = dotted.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value(marker) if callable(value) else value

    return mutate


def _touch(m: Path) -> list[str]:
    return ["touch", str(m)]


# name → how the craft changes the saved config, and what the refusal line must name
CRAFTED_CONFIGS = {
    "hydra-run-dir": (_hydra(run={"dir": "MARKER"}), "refused: hydra="),
    "hydra-sweep-dir": (_hydra(mode="MULTIRUN", sweep={"dir": "MARKER"}), "refused: hydra="),
    "hydra-output-subdir": (_hydra(output_subdir="MARKER"), "refused: hydra="),
    "hydra-log-file": (
        _hydra(job_logging={"version": 1, "handlers": {"f": {"class": "logging.FileHandler", "filename": "MARKER"}}}),
        "refused: hydra=",
    ),
    "hydra-log-factory": (
        _hydra(hydra_logging={"version": 1, "handlers": {"f": {"()": "subprocess.call", "args": "TOUCH"}}}),
        "refused: hydra=",
    ),
    "hydra-callback": (_hydra(callbacks={"x": {"_target_": "subprocess.call", "args": "TOUCH"}}), "refused: hydra="),
    "hydra-launcher": (_hydra(launcher={"_target_": "subprocess.call", "args": "TOUCH"}), "refused: hydra="),
    "hydra-sweeper": (_hydra(sweeper={"_target_": "subprocess.call", "args": "TOUCH"}), "refused: hydra="),
    "hydra-env-set": (_hydra(job={"env_set": {"PYTHONSTARTUP": "MARKER"}}), "refused: hydra="),
    "hydra-searchpath": (_hydra(searchpath=["file://MARKER"]), "refused: hydra="),
    "hydra-verbose": (_hydra(verbose=True), "refused: hydra="),
    "hydra-dotted-key": (lambda c, m: c.update({"hydra.run.dir": "MARKER"}), "refused: hydra.run.dir="),
    "defaults-list": (lambda c, m: c.update(defaults=["_self_", {"override hydra/job_logging": "none"}]), "defaults="),
    "target-through-an-import": (
        _set("callbacks.x", {"_target_": "lightning.pytorch.callbacks.model_checkpoint.os.system", "command": "TOUCH"}),
        "callbacks.x._target_=",
    ),
    "target-args": (_set("callbacks.x", {"_target_": "os.system", "_args_": ["TOUCH"]}), "callbacks.x._target_="),
    "target-partial-in-a-list": (
        _set("trainer.plugins", [{"_target_": "subprocess.call", "_partial_": True, "args": "TOUCH"}]),
        "trainer.plugins[0]._target_=",
    ),
    "target-remote-logger": (
        _set("logger.w", {"_target_": "lightning.pytorch.loggers.WandbLogger"}),
        "logger.w._target_=",
    ),
    "resolver-decode": (
        _set("callbacks.x", "${oc.decode:'{_target_: subprocess.call, args: [touch, MARKER]}'}"),
        "the resolver 'oc.decode'",
    ),
    "resolver-env-secret": (_set("data.start_marker", "${oc.env:HOME}"), "the environment variable 'HOME'"),
    "checkpoint-dirpath": (_set("callbacks.model_checkpoint.dirpath", "MARKER"), "callbacks.model_checkpoint.dirpath="),
    "checkpoint-filename": (_set("callbacks.last_checkpoint.filename", "../../../x"), "outside its folder"),
    "logger-save-dir": (_set("logger.tensorboard.save_dir", "MARKER"), "logger.tensorboard.save_dir="),
    "trainer-root-dir": (_set("trainer.default_root_dir", "${paths.output_dir}/../../x"), "trainer.default_root_dir="),
    "data-cache-dir": (_set("data.cache_dir", "MARKER"), "data.cache_dir="),
}


def _fill(node, marker: Path):
    """The craft with its placeholders made real: the marker file it tries to create, a touch of it."""
    if isinstance(node, dict):
        return {k: _fill(v, marker) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, marker) for v in node]
    if node == "TOUCH":
        return _touch(marker)
    return node.replace("MARKER", str(marker)) if isinstance(node, str) else node


def craft_job(base: Path, job: Path) -> dict:
    """A job folder with the base run's record (no checkpoints), its config returned for changing."""
    (job / ".hydra").mkdir(parents=True)
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.json", "provenance.json"):
        (job / name).write_bytes((base / name).read_bytes())
    return yaml.safe_load((job / ".hydra" / "config.yaml").read_text())


def test_no_crafted_run_folder_runs_or_writes_anything(lm_run, tmp_path):
    """Hydra settings of every kind, targets, resolvers, places to write, overrides and code: all refused."""
    sweep, markers, home = tmp_path / "sweep", tmp_path / "markers", tmp_path / "home"
    markers.mkdir()
    home.mkdir()
    expected = {}
    for i, (name, (mutate, says)) in enumerate(CRAFTED_CONFIGS.items()):
        job = sweep / f"{i}_{name}"
        config = craft_job(lm_run, job)
        mutate(config, markers / name)
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(_fill(config, markers / name)))
        expected[job.name] = says
    n = len(CRAFTED_CONFIGS)
    overrides = sweep / f"{n}_overrides-hydra"
    craft_job(lm_run, overrides)
    (overrides / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"hydra.run.dir={markers / 'o'}"]))
    expected[overrides.name] = "overrides.yaml: refused: hydra.run.dir="
    commit = sweep / f"{n + 1}_commit-option"
    craft_job(lm_run, commit)
    record = json.loads((commit / "provenance.json").read_text())
    record["code"]["commit"] = f"--output={markers / 'commit'}"
    (commit / "provenance.json").write_text(json.dumps(record))
    expected[commit.name] = "is not a git commit name"
    patched = sweep / f"{n + 2}_patch"  # the measured hole: a one-line patch of scripts/train.py runs os.system
    craft_job(lm_run, patched)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=SCRIPTS, capture_output=True, text=True).stdout.strip()
    record = json.loads((patched / "provenance.json").read_text())
    record["code"].update(commit=head, dirty=True)
    (patched / "provenance.json").write_text(json.dumps(record))
    first = (SCRIPTS / "train.py").read_text().splitlines()[0]
    (patched / "provenance.patch").write_text(
        "diff --git a/scripts/train.py b/scripts/train.py\n--- a/scripts/train.py\n+++ b/scripts/train.py\n"
        f"@@ -1 +1,2 @@\n+import os; os.system('touch {markers / 'patch'}')\n {first}\n"
    )

    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "rerun.py"), str(sweep), "--into", str(tmp_path / "again")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=quiet_env(home),
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert all(line.startswith("error: ") for line in lines), proc.stderr[-2000:]
    for job, says in expected.items():
        mine = [line for line in lines if f"/{job}/" in line or line.endswith(f"/{job}")]
        assert len(mine) == 1 and says in mine[0], (job, says, mine)
    assert f"{patched / 'provenance.patch'} changes 1 file(s) of commit {head}:" in proc.stdout
    assert "  scripts/train.py  +1 -0" in proc.stdout
    assert "refused: 1 run(s) replay a recorded patch" in proc.stderr and "--trust-code" in proc.stderr
    assert list(markers.iterdir()) == [] and list(home.iterdir()) == []  # nothing ran, nothing was written
    assert sorted(p.name for p in tmp_path.iterdir() if "matplotlib" not in p.name) == ["home", "markers", "sweep"]


def test_eval_run_from_another_folder_writes_nothing_there(lm_run, tmp_path):
    """The cache is the user's ($XDG_CACHE_HOME/rnnlab here), never .cache/ where the command is run."""
    cwd, xdg = tmp_path / "cwd", tmp_path / "xdg"
    cwd.mkdir()
    data = lm_run.parent / "data"
    env = {**quiet_env(tmp_path / "home"), "XDG_CACHE_HOME": str(xdg)}
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "eval.py"),
            f"ckpt_path={lm_run / 'checkpoints' / 'last.ckpt'}",
            f"paths.data_dir={data}",
            f"hydra.run.dir={tmp_path / 'eval'}",
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(cwd.iterdir()) == [] and list((xdg / "rnnlab").glob("novel-*.pt"))
    assert not (tmp_path / "home").exists()
