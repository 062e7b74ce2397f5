"""Fixtures: tiny datasets the tests make themselves, and the real Hydra configs composed around them."""

from __future__ import annotations

import os
import random
import tarfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from rnnlab.models.encoder import EncoderSettings, SequenceEncoder

# the local Slurm and PostgreSQL (tests/cluster.py): a plugin, so that each is one per session, not one per module
pytest_plugins = ["cluster"]

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = Path(str(resources.files("rnnlab") / "conf"))  # the configs travel inside the package
SCRIPTS = REPO / "scripts"
TESTS = REPO / "tests"
SHARED_DATA = REPO.parent / "shared" / "data"

POSITIVE = ["great", "wonderful", "loved", "brilliant", "superb"]
NEGATIVE = ["awful", "boring", "hated", "terrible", "dull"]
UNSUP_ONLY, UNSUP_REVIEWS = "unlabelledonly", 6
FILLER = ["the", "movie", "plot", "actor", "scene", "film", "story", "and", "a", "was"]


def real_data_dir() -> Path | None:
    """The real datasets: $RNNLAB_DATA_DIR, else ../shared/data beside the checkout."""
    env = os.environ.get("RNNLAB_DATA_DIR")
    candidate = Path(env) if env else SHARED_DATA
    return candidate if candidate.is_dir() else None


def write_tiny_imdb(root: Path, per_label: int = 24, seed: int = 0) -> Path:
    """An aclImdb-layout folder whose sentiment is carried by a few marker words."""
    rng = random.Random(seed)
    base = root / "imdb" / "aclImdb"
    for split in ("train", "test"):
        for label, words in (("pos", POSITIVE), ("neg", NEGATIVE)):
            folder = base / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_label):
                body = [rng.choice(FILLER) for _ in range(rng.randint(3, 14))]
                body.insert(rng.randint(0, len(body)), rng.choice(words))
                text = " ".join(body).capitalize() + ". <br /><br />" + rng.choice(["", " :)", " :-("])
                (folder / f"{i}_{rng.randint(1, 10)}.txt").write_text(text, encoding="utf-8")
    (base / "train" / "unsup").mkdir(parents=True, exist_ok=True)
    for i in range(UNSUP_REVIEWS):  # a word only the unlabelled reviews use
        body = [rng.choice(FILLER) for _ in range(rng.randint(3, 14))] + [UNSUP_ONLY]
        (base / "train" / "unsup" / f"{i}_0.txt").write_text(" ".join(body), encoding="utf-8")
    return base


def tar_folder(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def make_encoder(vocab_size: int, padding_idx: int | None = None, **settings) -> SequenceEncoder:
    """An encoder from keyword settings, as a config node gives them."""
    return SequenceEncoder(vocab_size, EncoderSettings(**settings), padding_idx)


# a char language model on the tiny novel in four steps: what tests that need any trained LM run
TINY_NOVEL_LM = (
    "experiment=novel_lstm",
    "data.filename=tiny.txt",
    "data.seq_length=12",
    "data.val_fraction=0.1",
    "data.test_fraction=0.1",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "model.encoder.embed_dim=8",
    "model.encoder.hidden_size=8",
)

NOVEL_BODY = (
    "The island was silent. The engineer looked at the sea, and the sailor looked at the sky.\n"
    "Captain Nemo had left them a chest of tools; the boy counted them twice.\n"
)


def write_tiny_novel(root: Path, repeats: int = 40, name: str = "tiny.txt") -> Path:
    """A small Gutenberg-style file: header, START/END markers, licence footer."""
    folder = root / "novel"
    folder.mkdir(parents=True, exist_ok=True)
    text = (
        "The Project Gutenberg eBook of a tiny novel\r\n\r\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK TINY ***\r\n"
        + NOVEL_BODY.replace("\n", "\r\n") * repeats
        + "*** END OF THE PROJECT GUTENBERG EBOOK TINY ***\r\nLicence text that is not the novel.\r\n"
    )
    (folder / name).write_text(text, encoding="utf-8", newline="")
    return folder / name


SHAKESPEARE_BODY = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n\n"
)


def write_tiny_shakespeare(root: Path, repeats: int = 40) -> Path:
    """A plain text where data=shakespeare looks for it (read whole, as nanoGPT reads input.txt)."""
    folder = root / "shakespeare"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "input.txt").write_text(SHAKESPEARE_BODY * repeats, encoding="utf-8")
    return folder / "input.txt"


NEWS_LINES = [
    "The president met world leaders in Paris to talk trade.",
    "Scientists found water on a distant moon, NASA said.",
    "The senator's new bill would raise taxes & cut spending.",
    "A well-known chef opened a restaurant in New York.",
    "The team won the championship after a late goal.",
    "Stocks fell sharply as investors worried about inflation.",
]


def write_tiny_news(root: Path, repeats: int = 8) -> Path:
    import json

    folder = root / "news"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "News_Category_Dataset_tiny.json"
    records = [
        {"headline": "h", "category": "POLITICS", "short_description": line, "date": "2022-01-01"}
        for _ in range(repeats)
        for line in NEWS_LINES
    ]
    records.append({"headline": "h", "category": "X", "short_description": "!!! ---", "date": "2022-01-01"})
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(autouse=True, scope="session")
def test_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """No test writes the user's own cache (``~/.cache/rnnlab``): commands a test runs without a
    ``paths.cache_dir`` share one of their own (a test of the default unsets the variable)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNLAB_CACHE_DIR", str(tmp_path_factory.mktemp("user-cache")))
        yield


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_tiny_imdb(root)
    write_tiny_novel(root)
    write_tiny_shakespeare(root)
    write_tiny_news(root)
    return root


@pytest.fixture
def compose_cfg(tiny_data_dir: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a real entry config (train/eval) for a quick CPU run on the tiny data."""

    def _compose(*overrides: str, config_name: str = "train", output_dir: Path | None = None) -> DictConfig:
        quiet_trainer = (
            ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
            if config_name in ("train", "eval")
            else []
        )
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                config_name,
                overrides=[
                    f"paths.data_dir={tiny_data_dir}",
                    f"paths.cache_dir={tmp_path / 'cache'}",
                    f"paths.output_dir={output_dir or tmp_path / 'run'}",
                    *quiet_trainer,
                    *overrides,
                ],
            )
        with open_dict(cfg):
            cfg.paths.log_dir = str(tmp_path / "outputs")
        return cfg

    return _compose
