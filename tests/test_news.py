import json

import pytest

from rnnlab.data.batching import IGNORE_INDEX
from rnnlab.data.news import NewsDataModule
from rnnlab.data.text import normalize_description
from rnnlab.errors import DataFormatError, DataNotFoundError

from conftest import real_data_dir


def make_dm(data_dir, cache_dir, **kw):
    return NewsDataModule(
        data_dir=str(data_dir), cache_dir=str(cache_dir), batch_size=4, val_fraction=0.1, test_fraction=0.1, **kw
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A well-known chef", "a well known chef"),
        ("Taxes & spending: who's right?!", "taxes & spending who's right"),
        ("COVID-19 cases rose 25% in 2021.", "covid 19 cases rose 25 in 2021"),
        ("  «Quoted» text…  ", "quoted text"),
        ("!!! ---", ""),
    ],
)
def test_normalisation_cases(raw, expected):
    assert normalize_description(raw) == expected


def test_special_tokens_vocab_and_ignore_positions(tiny_data_dir, tmp_path):
    dm = make_dm(tiny_data_dir, tmp_path)
    dm.setup()
    itos = dm.vocab.itos
    assert itos[0] == "<unk>" and itos[-1] == "<pad>" and "<start>" in itos and "<end>" in itos
    assert dm.load_payload()["dropped_empty"] == 1
    batch = next(iter(dm.train_dataloader()))
    start, end = dm.vocab.stoi["<start>"], dm.vocab.stoi["<end>"]
    for tokens, targets, length in zip(batch.tokens, batch.targets, batch.lengths, strict=True):
        assert tokens[0] == start and targets[length - 1] == end
        assert (targets[length:] == IGNORE_INDEX).all() and (tokens[length:] == dm.pad_index).all()


def test_vocabulary_cap_counts_unk(tiny_data_dir, tmp_path):
    dm = make_dm(tiny_data_dir, tmp_path, max_words=10)
    dm.setup()
    assert len(dm.vocab) == 11 and dm.vocab.itos[-1] == "<pad>"  # 10 incl. <unk>, then <pad>


def test_malformed_line_and_missing_field_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"short_description": "ok"}) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="line 2 is not valid JSON"):
        NewsDataModule(path=str(path), cache_dir=str(tmp_path)).prepare_data()
    path.write_text(json.dumps({"headline": "no description"}) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="no 'short_description' field"):
        NewsDataModule(path=str(path), cache_dir=str(tmp_path)).prepare_data()


def test_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"News_Category_Dataset_v3.json.*kaggle.*RNNLAB_DATA_DIR"):
        make_dm(tmp_path, tmp_path).prepare_data()


def test_long_descriptions_are_cut_at_max_length(tmp_path):
    path = tmp_path / "long.json"
    words = " ".join(f"w{i}" for i in range(40))
    path.write_text("".join(json.dumps({"short_description": words}) + "\n" for _ in range(10)), encoding="utf-8")
    dm = NewsDataModule(path=str(path), cache_dir=str(tmp_path), max_length=16, batch_size=2)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch.tokens.size(1) == 16 and int(batch.lengths.max()) == 16


@pytest.mark.real_data
def test_real_news_subset_loads(tmp_path):
    data = real_data_dir()
    if data is None or not list((data / "news").glob("News_Category_Dataset*.json")):
        pytest.skip("real news data not found: set RNNLAB_DATA_DIR or place ../shared/data beside the checkout")
    dm = NewsDataModule(data_dir=str(data), cache_dir=str(tmp_path))
    dm.setup()
    total = sum(len(d) for d in dm.datasets.values()) + dm.load_payload()["dropped_empty"]
    assert total in (13_456, 209_527)
