"""Training throughput: counted over the training batches only, recorded but never compared."""

from types import SimpleNamespace

import pytest
import torch

from rnnlab.data.batching import Batch
from rnnlab.reporting.rerun import metric_differences
from rnnlab.training import throughput
from rnnlab.training.throughput import EXAMPLES_PER_S, TOKENS_PER_S, TrainingThroughput


def batch(*lengths: int) -> Batch:
    return Batch(torch.zeros(len(lengths), max(lengths), dtype=torch.long), torch.tensor(lengths), torch.zeros(1))


def test_the_clock_stops_for_validation_and_only_labelled_reviews_count(monkeypatch):
    clock = iter([0.0, 2.0, 10.0, 12.0])  # epoch start, mid-epoch validation, next batch, end-of-epoch validation
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(clock))
    logged = {}
    module = SimpleNamespace(device=torch.device("cpu"), log_dict=lambda values, **kw: logged.update(values, **kw))
    callback = TrainingThroughput()

    callback.on_validation_start(None, module)  # the sanity check, before any training: no clock to stop
    callback.on_train_epoch_start(None, module)
    callback.on_train_batch_start(None, module, None, 0)
    callback.on_train_batch_end(None, module, None, batch(3, 5, 2, 1), 0)
    callback.on_validation_start(None, module)
    callback.on_train_batch_start(None, module, None, 1)
    callback.on_train_batch_end(None, module, None, {"labelled": batch(4, 4), "unlabelled": batch(9, 9, 9)}, 1)
    callback.on_validation_start(None, module)
    callback.on_train_epoch_end(None, module)

    # 4 seconds of training (0-2, 10-12); 6 labelled reviews of 19 real tokens
    assert logged[EXAMPLES_PER_S] == pytest.approx(6 / 4)
    assert logged[TOKENS_PER_S] == pytest.approx(19 / 4)
    assert logged["sync_dist"] and logged["reduce_fx"] == "sum"  # DDP: the whole job's rate


def test_a_replay_is_not_judged_by_its_speed():
    recorded = {"val/acc": 0.9, EXAMPLES_PER_S: 120.0}
    assert metric_differences(recorded, {"val/acc": 0.9, EXAMPLES_PER_S: 30.0}) == []
    assert metric_differences(recorded, {"val/acc": 0.8, EXAMPLES_PER_S: 120.0}) == ["val/acc"]
