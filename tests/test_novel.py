from pathlib import Path

import pytest
import torch

from rnnlab.data.novel import ContiguousStreams, NovelDataModule
from rnnlab.data.textfile import body_chunks, find_body, read_chunks, read_text, scan
from rnnlab.errors import ConfigError, DataFormatError

from conftest import NOVEL_BODY, real_data_dir


def make_dm(data_dir, cache_dir, **kw):
    kw.setdefault("filename", "tiny.txt")
    return NovelDataModule(
        data_dir=str(data_dir),
        cache_dir=str(cache_dir),
        download=False,
        seq_length=8,
        batch_size=4,
        val_fraction=0.1,
        test_fraction=0.1,
        **kw,
    )


def body(tmp_path, text: str, start=None, end=None, chunk_bytes: int = 1 << 24) -> str:
    """The body the DataModule reads from a file holding ``text`` (pieces of ``chunk_bytes``)."""
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8", newline="")
    span = find_body(read_chunks(path, chunk_bytes=chunk_bytes), start, end)
    length = scan(body_chunks(path, "utf-8", span, chunk_bytes), span.strip).length
    return "".join(body_chunks(path, "utf-8", span, chunk_bytes))[:length]


@pytest.mark.parametrize("chunk_bytes", [5, 1 << 24])  # markers and "\r\n" cut between pieces, or not
def test_gutenberg_markers_book_slice_and_plain_text(tmp_path, chunk_bytes):
    text = "Chapter 1\nIt begins.\n"
    wrapped = (
        f"Header\r\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n\r\n{text}"
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nLicence"
    )
    assert body(tmp_path, wrapped, chunk_bytes=chunk_bytes) == text.strip("\n")
    assert body(tmp_path, "Just a text.\n\n", chunk_bytes=chunk_bytes) == "Just a text."
    book = "junk THE ISLAND starts here. End of the Project Gutenberg rest"
    expected = "THE ISLAND starts here. "
    assert body(tmp_path, book, "THE ISLAND", "End of the Project Gutenberg", chunk_bytes) == expected
    # markers not found: fall back to the Gutenberg block
    assert body(tmp_path, wrapped, "NOT THERE", "NOR THIS", chunk_bytes) == text.strip("\n")


def test_read_text_errors_name_the_byte_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good text \xff\xfe more")
    with pytest.raises(DataFormatError, match=r"byte offset 10.*data.encoding"):
        read_text(path)
    assert read_text(path, encoding="latin-1").startswith("good text")


def test_empty_text_is_a_clear_error(tmp_path):
    (tmp_path / "novel").mkdir()
    (tmp_path / "novel" / "empty.txt").write_text("  \n\n ")
    with pytest.raises(DataFormatError, match="empty.txt: no text left"):
        make_dm(tmp_path, tmp_path / "c", filename="empty.txt").prepare_data()


def test_vocab_sorted_targets_shifted_and_tail_held_out(tiny_data_dir, tmp_path):
    dm = make_dm(tiny_data_dir, tmp_path)
    dm.setup()
    assert dm.vocab.itos == sorted(set(NOVEL_BODY))  # CRLF normalised: no '\r'
    text = (NOVEL_BODY * 40).strip("\n")
    decoded = "".join(dm.codec.decode(dm.parts[p].tolist()) for p in ("train", "val", "test"))
    assert decoded == text
    batch = next(iter(dm.train_dataloader()))
    assert batch.tokens.shape == batch.targets.shape == (4, 8)
    assert torch.equal(batch.tokens[:, 1:], batch.targets[:, :-1])
    # no training window reaches into the validation tail
    n_train = dm.parts["train"].numel()
    windows = dm.train_dataloader().dataset
    last_start = (len(windows) - 1) * windows.stride
    assert last_start + windows.window <= n_train


def test_streams_continue_across_batches():
    encoded = torch.arange(1, 102)
    streams = ContiguousStreams(encoded, batch_size=4, seq_length=5)
    first, second = streams[0], streams[1]
    assert torch.equal(second.tokens[:, 0], first.tokens[:, -1] + 1)  # stream k continues where it stopped
    assert torch.equal(first.targets, first.tokens + 1)


def test_seq_length_longer_than_text_is_a_config_error(tiny_data_dir, tmp_path):
    dm = NovelDataModule(
        data_dir=str(tiny_data_dir), cache_dir=str(tmp_path), filename="tiny.txt", seq_length=5000, download=False
    )
    with pytest.raises(ConfigError, match="data.seq_length=5000 is longer than"):
        dm.setup()


@pytest.mark.real_data
def test_real_novel_matches_the_book(tmp_path):
    data = real_data_dir()
    if data is None or not (data / "novel" / "1268-0.txt").exists():
        pytest.skip("real novel not found: set RNNLAB_DATA_DIR or place ../shared/data beside the checkout")
    dm = NovelDataModule(data_dir=str(data), cache_dir=str(tmp_path), download=False)
    dm.setup()
    assert sum(p.numel() for p in dm.parts.values()) == 1_112_350
    assert dm.vocab_size == 80


def test_under_ddp_each_rank_carries_its_state_over_its_own_contiguous_text(tmp_path):
    import random
    from types import SimpleNamespace

    (tmp_path / "novel").mkdir()  # random letters: every stretch of the text occurs once, so it can be located
    rng = random.Random(0)
    (tmp_path / "novel" / "random.txt").write_text("".join(rng.choice("abcdefghij ") for _ in range(3000)))
    dm = NovelDataModule(
        data_dir=str(tmp_path),
        cache_dir=str(tmp_path / "cache"),
        filename="random.txt",
        streams=True,
        batch_size=3,
        seq_length=7,
        val_fraction=0.1,
        test_fraction=0.1,
        download=False,
    )
    dm.setup()
    text = dm.parts["train"]
    seen = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        batches = list(dm.train_dataloader())
        streams = torch.cat([b.tokens for b in batches], dim=1)  # what each row of the state reads, in order
        targets = torch.cat([b.targets for b in batches], dim=1)
        for row, row_targets in zip(streams, targets, strict=True):
            start = next(i for i in range(text.numel()) if torch.equal(text[i : i + row.numel()].long(), row))
            assert torch.equal(text[start + 1 : start + 1 + row.numel()].long(), row_targets)  # contiguous
            seen.append((rank, start, start + row.numel()))
        assert len(batches) == len(list(dm.train_dataloader()))
    half = text.numel() // 2
    assert all(end <= half for rank, _, end in seen if rank == 0)  # rank 0 reads the first half
    assert all(start >= half for rank, start, _ in seen if rank == 1)  # rank 1 the second


RACE = """
import sys, time
from rnnlab.data.novel import NovelDataModule
build = NovelDataModule.build
def slow_build(self, source):  # long enough for the other process to arrive while this one builds
    with open(sys.argv[3], "a") as log:
        log.write("built\\n")
    time.sleep(2)
    return build(self, source)
NovelDataModule.build = slow_build
dm = NovelDataModule(data_dir=sys.argv[1], cache_dir=sys.argv[2], filename="tiny.txt", download=False)
dm.prepare_data()
print(dm.vocab_size, dm.provenance["cache_key"])
"""


def test_two_processes_racing_on_a_cold_cache_build_it_once(tiny_data_dir, tmp_path):
    import subprocess
    import sys

    builds = tmp_path / "builds.log"
    args = [sys.executable, "-c", RACE, str(tiny_data_dir), str(tmp_path / "cache"), str(builds)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert builds.read_text().count("built") == 1  # the second waited for the lock, then read the cache
    assert outputs[0] == outputs[1]


def test_the_cache_is_memory_mapped_and_windows_read_the_text_itself(tiny_data_dir, tmp_path):
    """A reload maps the cache file instead of reading it, and each window is the text at its place."""
    make_dm(tiny_data_dir, tmp_path).prepare_data()  # builds the cache
    dm = make_dm(tiny_data_dir, tmp_path)
    dm.setup()
    cache_file = dm.cache.path(dm.provenance["cache_key"])
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(cache_file) in maps.read_text()  # the tensors' pages are the file's
    assert dm.parts["train"].dtype == torch.uint8  # one byte a character for a book's alphabet
    text = "".join(
        body_chunks(
            tiny_data_dir / "novel" / "tiny.txt",
            "utf-8",
            find_body(read_chunks(tiny_data_dir / "novel" / "tiny.txt"), dm.start_marker, dm.end_marker),
        )
    )
    windows = dm.train_dataloader().dataset
    for i in (0, 1, 7, len(windows) - 1):
        assert (
            "".join(dm.vocab.itos[c] for c in windows[i].tolist())
            == text[i * windows.stride : i * windows.stride + windows.window]
        )


def test_a_large_corpus_is_shuffled_without_an_index_per_window():
    """Past the exact limit the order is a keyed permutation: every window once, in O(1) memory."""
    from rnnlab.data.batching import EXACT_SHUFFLE_LIMIT, BucketBatchSampler, KeyedPermutation

    n = 1000
    perm = KeyedPermutation(n, torch.Generator().manual_seed(0))
    values = perm[torch.arange(n)]
    assert sorted(values.tolist()) == list(range(n)) and not torch.equal(values, torch.arange(n))
    big = BucketBatchSampler(EXACT_SHUFFLE_LIMIT + 5, batch_size=64, bucket=False, seed=1)
    first = next(iter(big))
    assert len(first) == 64 and len(set(first)) == 64 and max(first) < EXACT_SHUFFLE_LIMIT + 5
