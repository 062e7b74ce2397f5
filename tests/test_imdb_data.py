from collections import Counter

import pytest
import torch

from rnnlab.data.batching import IGNORE_INDEX
from rnnlab.data.imdb import IMDBDataModule, read_reviews
from rnnlab.data.text import imdb_tokenize
from rnnlab.errors import ConfigError, DataFormatError, DataNotFoundError

from conftest import UNSUP_ONLY, real_data_dir, tar_folder, write_tiny_imdb


def make_dm(data_dir, cache_dir, **kw):
    return IMDBDataModule(data_dir=str(data_dir), cache_dir=str(cache_dir), download=False, val_size=8, **kw)


def test_split_is_deterministic_disjoint_and_vocab_from_train_only(tiny_data_dir, tmp_path):
    a = make_dm(tiny_data_dir, tmp_path / "c1")
    b = make_dm(tiny_data_dir, tmp_path / "c2")
    a.setup("fit"), b.setup("fit")
    assert len(a.datasets["train"]) == 40 and len(a.datasets["val"]) == 8 and len(a.datasets["test"]) == 48
    for split in ("train", "val", "test"):
        assert torch.equal(a.datasets[split].flat, b.datasets[split].flat)
    # disjoint and complete: train + val are exactly the 48 training reviews, each once
    vocab = a.vocab
    reviews = read_reviews(tiny_data_dir / "imdb" / "aclImdb")["train"]
    every = Counter(tuple(vocab.encode(imdb_tokenize(text))) for _, _, text in reviews)
    seen = Counter(tuple(ds[i][0].tolist()) for ds in (a.datasets["train"], a.datasets["val"]) for i in range(len(ds)))
    assert seen == every
    # vocabulary from the training part only: every word id occurs in train, <unk> never does
    train_ids = set(a.datasets["train"].flat.tolist())
    assert train_ids == set(range(2, len(vocab)))
    assert vocab.itos[:2] == ["<pad>", "<unk>"]


def test_other_split_seed_gives_other_split(tiny_data_dir, tmp_path):
    a, b = make_dm(tiny_data_dir, tmp_path / "c1"), make_dm(tiny_data_dir, tmp_path / "c2", split_seed=2)
    a.setup(), b.setup()
    assert not torch.equal(a.datasets["val"].labels, b.datasets["val"].labels) or not torch.equal(
        a.datasets["val"].flat, b.datasets["val"].flat
    )


def test_archive_and_folder_read_the_same(tiny_data_dir, tmp_path):
    folder = tiny_data_dir / "imdb" / "aclImdb"
    archive = tar_folder(folder, tmp_path / "aclImdb_v1.tar.gz")
    assert read_reviews(archive) == read_reviews(folder)


def test_cache_is_reused_and_rebuilt_when_settings_change(tiny_data_dir, tmp_path, monkeypatch):
    make_dm(tiny_data_dir, tmp_path).prepare_data()
    calls = []
    monkeypatch.setattr(IMDBDataModule, "build", lambda self, src: calls.append(src) or {})
    make_dm(tiny_data_dir, tmp_path).prepare_data()
    assert calls == []  # loaded from cache
    with pytest.raises(KeyError):  # the stub payload proves build ran for new settings
        make_dm(tiny_data_dir, tmp_path, min_freq=2).prepare_data()
    assert len(calls) == 1


def test_half_written_cache_is_rebuilt(tiny_data_dir, tmp_path):
    dm = make_dm(tiny_data_dir, tmp_path)
    dm.prepare_data()
    cache_file = next(tmp_path.glob("imdb-*.pt"))
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    again = make_dm(tiny_data_dir, tmp_path)
    again.setup()
    assert len(again.datasets["train"]) == 40


def test_missing_data_names_paths_url_and_env_var(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        make_dm(tmp_path / "nowhere", tmp_path).prepare_data()
    message = str(err.value)
    for needle in ("aclImdb_v1.tar.gz", "aclImdb", "https://ai.stanford.edu", "RNNLAB_DATA_DIR"):
        assert needle in message


def test_truncated_archive_is_a_clear_error(tmp_path):
    write_tiny_imdb(tmp_path / "src")
    archive = tar_folder(tmp_path / "src" / "imdb" / "aclImdb", tmp_path / "full.tar.gz")
    (tmp_path / "data" / "imdb").mkdir(parents=True)
    (tmp_path / "data" / "imdb" / "aclImdb_v1.tar.gz").write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataFormatError, match="truncated or corrupt"):
        make_dm(tmp_path / "data", tmp_path / "cache").prepare_data()
    assert not list((tmp_path / "cache").glob("*.pt"))  # nothing cached as good


def test_collate_shapes_and_lengths(tiny_data_dir, tmp_path):
    dm = make_dm(tiny_data_dir, tmp_path, batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.tokens.shape[0] == 4 and batch.tokens.shape[1] == int(batch.lengths.max())
    for row, length in zip(batch.tokens, batch.lengths, strict=True):
        assert (row[length:] == dm.pad_index).all() and (row[:length] != dm.pad_index).all()


@pytest.mark.real_data
def test_real_imdb_has_official_counts(tmp_path):
    data = real_data_dir()
    if data is None or not (data / "imdb").exists():
        pytest.skip("real IMDb data not found: set RNNLAB_DATA_DIR or place ../shared/data beside the checkout")
    dm = IMDBDataModule(data_dir=str(data), cache_dir=str(tmp_path), download=False)
    dm.setup()
    train, val, test = (dm.datasets[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (20000, 5000, 25000)
    assert int(train.labels.sum() + val.labels.sum()) == 12500
    assert int(test.labels.sum()) == 12500


def test_unlabelled_reviews_widen_the_vocabulary_only_when_asked(tiny_data_dir, tmp_path):
    plain = make_dm(tiny_data_dir, tmp_path / "c1")
    wide = make_dm(tiny_data_dir, tmp_path / "c2", unlabelled=True)
    plain.prepare_data(), wide.prepare_data()
    assert UNSUP_ONLY not in plain.vocab.stoi and UNSUP_ONLY in wide.vocab.stoi
    wide.setup("fit")  # the classifier's splits do not change
    plain.setup("fit")
    assert sorted(wide.datasets) == ["test", "train", "val"]
    assert len(wide.datasets["train"]) == len(plain.datasets["train"])


def test_language_model_mode_reads_train_and_unlabelled_never_test(tiny_data_dir, tmp_path):
    dm = make_dm(tiny_data_dir, tmp_path / "c", task="lm", unlabelled=True, lm_chunk_length=4, batch_size=4)
    dm.setup("fit")
    splits = dm.load_payload()["splits"]
    # every token but each review's first is a target once: train (20k part) + unlabelled, val apart
    expected_targets = sum(
        int(splits[name]["offsets"][-1]) - (splits[name]["offsets"].numel() - 1) for name in ("train", "unsup")
    )
    batches = list(dm.train_dataloader())
    assert sum(int((b.targets != IGNORE_INDEX).sum()) for b in batches) == expected_targets
    assert max(b.tokens.size(1) for b in batches) <= 4
    unsup_id = dm.vocab.stoi[UNSUP_ONLY]
    assert any(bool((b.tokens == unsup_id).any() | (b.targets == unsup_id).any()) for b in batches)
    val_targets = sum(int((b.targets != IGNORE_INDEX).sum()) for b in dm.val_dataloader())
    assert val_targets == int(splits["val"]["offsets"][-1]) - 8
    assert not dm.has_test_split
    with pytest.raises(ConfigError, match="never reads the IMDb test reviews"):
        dm.test_dataloader()
    assert dm.codec.encode("A GREAT movie!") == dm.vocab.encode(["a", "great", "movie"])


@pytest.mark.parametrize("task", ["classify", "lm"])
def test_reverse_reads_each_review_end_first_with_its_own_label(tiny_data_dir, tmp_path, task):
    forward = make_dm(tiny_data_dir, tmp_path / "c", task=task, lm_chunk_length=1000)
    backward = make_dm(tiny_data_dir, tmp_path / "c", task=task, lm_chunk_length=1000, reverse=True)
    forward.setup("fit"), backward.setup("fit")
    assert forward.vocab.itos == backward.vocab.itos  # one cache, one vocabulary for both directions
    for split in ("train", "val"):
        a, b = forward.datasets[split], backward.datasets[split]
        assert len(a) == len(b) > 0
        for i in range(len(a)):
            assert b[i][0].tolist() == a[i][0].flip(0).tolist()
            assert (a[i][1] is None and b[i][1] is None) or torch.equal(a[i][1], b[i][1])


def test_unknown_task_is_refused():
    with pytest.raises(ConfigError, match="data.task='regression'"):
        IMDBDataModule(data_dir="x", task="regression")
