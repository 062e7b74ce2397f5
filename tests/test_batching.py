import torch

from rnnlab.data.batching import (
    IGNORE_INDEX,
    BucketBatchSampler,
    RaggedSequences,
    chunk_spans,
    collate_classification,
    collate_language_model,
    concat_ragged,
    labelled_and_unlabelled,
    ragged_from_ids,
    reverse_each,
)


def test_ragged_round_trip_and_collate_shapes():
    flat, offsets = ragged_from_ids([[5, 6, 7], [8], [9, 10]])
    ds = RaggedSequences.from_offsets(flat, offsets, torch.tensor([1.0, 0.0, 1.0]))
    batch = collate_classification([ds[0], ds[1], ds[2]], pad_index=0)
    assert batch.tokens.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert batch.lengths.tolist() == [3, 1, 2]
    assert batch.targets.tolist() == [1.0, 0.0, 1.0]


def test_a_training_batch_splits_into_labelled_and_unlabelled_reviews():
    flat, offsets = ragged_from_ids([[5, 6], [7]])
    ds = RaggedSequences.from_offsets(flat, offsets, torch.tensor([1.0, 0.0]))
    labelled = collate_classification([ds[0], ds[1]], pad_index=0)
    unlabelled = collate_classification([ds[1]], pad_index=0)
    for batch, expected_unlabelled in [
        (labelled, None),
        ({"labelled": labelled}, None),
        ({"labelled": labelled, "unlabelled": unlabelled}, unlabelled),
    ]:
        got_labelled, got_unlabelled = labelled_and_unlabelled(batch)
        assert got_labelled is labelled and got_unlabelled is expected_unlabelled


def test_max_length_truncates():
    flat, offsets = ragged_from_ids([[1, 2, 3, 4], [5]])
    ds = RaggedSequences.from_offsets(flat, offsets, max_length=2)
    assert ds[0][0].tolist() == [1, 2] and ds.lengths.tolist() == [2, 1]


def test_language_model_collate_shifts_targets_and_ignores_padding():
    flat, offsets = ragged_from_ids([[1, 2, 3, 4], [1, 5, 4]])
    ds = RaggedSequences.from_offsets(flat, offsets)
    batch = collate_language_model([ds[0], ds[1]], pad_index=9)
    assert batch.tokens.tolist() == [[1, 2, 3], [1, 5, 9]]
    assert batch.targets.tolist() == [[2, 3, 4], [5, 4, IGNORE_INDEX]]
    assert batch.lengths.tolist() == [3, 2]


def test_bucket_sampler_covers_every_index_once_and_groups_lengths():
    lengths = torch.randint(1, 500, (1000,), generator=torch.Generator().manual_seed(0))
    sampler = BucketBatchSampler(lengths, batch_size=32, seed=3, pool_factor=10)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in batches) / len(batches)
    assert spread < 60  # random batches of 32 would spread over ~470


def test_bucket_sampler_reshuffles_per_epoch_deterministically():
    lengths = torch.arange(100)
    a, b = BucketBatchSampler(lengths, 10, seed=1), BucketBatchSampler(lengths, 10, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first


def test_bucket_sampler_shards_are_disjoint_and_equal_for_training():
    lengths = torch.arange(103)
    shards = [list(BucketBatchSampler(lengths, 10, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5
    flat = [set(i for b in s for i in b) for s in shards]
    assert not flat[0] & flat[1]


def test_eval_shards_cover_everything():
    lengths = torch.arange(95)
    shards = [list(BucketBatchSampler(lengths, 10, shuffle=False, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(i for s in shards for b in s for i in b) == list(range(95))
    assert [len(s) for s in shards] == [
        len(BucketBatchSampler(lengths, 10, shuffle=False, num_replicas=2, rank=r)) for r in (0, 1)
    ]


def test_lightning_sets_the_epoch_of_the_bucket_sampler():
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    sampler = BucketBatchSampler(torch.arange(50), 5, seed=0)
    loader = DataLoader(list(range(50)), batch_sampler=sampler)
    first = [b.tolist() for b in loader]
    _set_sampler_epoch(loader, 3)
    assert sampler.epoch == 3 and [b.tolist() for b in loader] != first


def test_chunk_spans_predict_every_token_once_but_each_first():
    offsets = torch.tensor([0, 1, 4, 10, 11, 13])  # lengths 1, 3, 6, 1, 2
    starts, lengths = chunk_spans(offsets, 2)
    pieces = RaggedSequences(torch.arange(13), starts, lengths)
    assert [pieces[i][0].tolist() for i in range(len(pieces))] == [[1, 2, 3], [4, 5, 6], [6, 7, 8], [8, 9], [11, 12]]
    targets = [t for i in range(len(pieces)) for t in pieces[i][0][1:].tolist()]
    assert targets == [2, 3, 5, 6, 7, 8, 9, 12]  # every token except each sequence's first, once
    assert torch.equal(pieces.lengths, lengths)


def test_concat_ragged_keeps_order_and_boundaries():
    a = ragged_from_ids([[1], [2, 3]])
    b = ragged_from_ids([[4, 5, 6]])
    flat, offsets = concat_ragged([a, b])
    joined = RaggedSequences.from_offsets(flat, offsets)
    assert [joined[i][0].tolist() for i in range(len(joined))] == [[1], [2, 3], [4, 5, 6]]


def test_reverse_each_flips_every_sequence_in_place():
    flat, offsets = ragged_from_ids([[1, 2, 3], [], [4], [5, 6]])
    backward = RaggedSequences.from_offsets(reverse_each(flat, offsets), offsets)
    assert [backward[i][0].tolist() for i in range(4)] == [[3, 2, 1], [], [4], [6, 5]]
    assert torch.equal(reverse_each(reverse_each(flat, offsets), offsets), flat)
    tail = reverse_each(torch.arange(6), torch.tensor([2, 4, 6]))  # offsets not from 0: the head is untouched
    assert tail.tolist() == [0, 1, 3, 2, 5, 4]
