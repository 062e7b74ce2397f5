"""Adversarial (at) and virtual adversarial (vat) training on word embeddings."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_transfer import TINY

from rnnlab.data.batching import Batch
from rnnlab.errors import ConfigError
from rnnlab.models.adversarial import (
    MODES,
    AdversarialSettings,
    kl_divergence,
    sensitive_direction,
    terms_of,
    unit,
    virtual_adversarial_loss,
)
from rnnlab.models.classifier import SequenceClassifier
from rnnlab.models.encoder import CELLS
from rnnlab.runs.checkpoints import CONFIG_KEY, Checkpoint
from rnnlab.tasks.evaluate import evaluate
from rnnlab.tasks.predict import predict
from rnnlab.tasks.train import train

SMALL = ("model.encoder.embed_dim=16", "model.encoder.hidden_size=24")


def classifier(**kw) -> SequenceClassifier:
    torch.manual_seed(0)
    model = SequenceClassifier(vocab_size=30, encoder={"embed_dim": 8, "hidden_size": 12}, pooling="meanmax", **kw)
    if model.normalized:
        model.token_frequencies.copy_(torch.rand(30) + 0.1)
    return model.eval()  # no dropout: the same input gives the same prediction


def test_the_perturbation_has_the_configured_norm_and_points_uphill():
    model = classifier(adversarial={"mode": "at", "epsilon": 0.5})
    tokens, lengths = torch.randint(1, 30, (4, 9)), torch.tensor([9, 5, 7, 3])
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0])
    embedded = model.embed(tokens).detach().requires_grad_()
    loss = model.loss(model.logits_from(embedded, lengths), targets)
    (grad,) = torch.autograd.grad(loss, embedded)
    r = 0.5 * unit(grad, lengths)
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.full((4,), 0.5), atol=1e-5)
    assert (r[1, 5:] == 0).all() and (r[3, 3:] == 0).all()  # padding is never perturbed
    with torch.no_grad():
        assert model.loss(model.logits_from(embedded + r, lengths), targets) > loss  # uphill
        assert model.loss(model.logits_from(embedded - r, lengths), targets) < loss


def test_the_embeddings_are_normalised_by_word_frequency():
    model = classifier(adversarial={"mode": "vat"})
    from rnnlab.models.adversarial import normalized_embeddings

    weight = normalized_embeddings(model.encoder.embedding.weight, model.token_frequencies)
    f = (model.token_frequencies / model.token_frequencies.sum()).unsqueeze(1)
    assert torch.allclose((f * weight).sum(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose((f * weight**2).sum(0), torch.ones(8), atol=1e-3)


def test_vat_kl_is_zero_without_a_perturbation_and_grows_with_one():
    model = classifier(adversarial={"mode": "vat"})
    tokens, lengths = torch.randint(1, 30, (3, 6)), torch.tensor([6, 4, 2])
    embedded = model.embed(tokens)
    logits = model.logits_from(embedded, lengths)
    assert kl_divergence(logits, model.logits_from(embedded + 0.0, lengths)).item() == pytest.approx(0.0, abs=1e-7)
    tiny = virtual_adversarial_loss(model.logits_from, embedded, lengths, 1e-3, 1e-6, 1)
    large = virtual_adversarial_loss(model.logits_from, embedded, lengths, 5.0, 1e-6, 1)
    assert 0 <= tiny < large


def test_with_the_same_dropout_masks_the_vat_term_holds_no_dropout_noise():
    model = classifier(adversarial={"mode": "vat"}, head_dropout=0.5).train()
    tokens, lengths = torch.randint(1, 30, (4, 6)), torch.tensor([6, 5, 4, 2])
    embedded = model.embed(tokens).detach()
    torch.manual_seed(1)
    noisy = virtual_adversarial_loss(model.logits_from, embedded, lengths, 1e-4, 0.1, 1)
    torch.manual_seed(1)
    same = virtual_adversarial_loss(model.logits_from, embedded, lengths, 1e-4, 0.1, 1, same_dropout=True)
    after = torch.rand(1)  # the training's own random stream goes on as without the forked passes
    torch.manual_seed(1)
    virtual_adversarial_loss(model.logits_from, embedded, lengths, 1e-4, 0.1, 1, same_dropout=True)
    assert noisy > 1e-4 and same < 1e-4 * noisy and torch.equal(torch.rand(1), after)


def test_the_perturbation_enters_after_the_embedding_dropout():
    # the clean and the perturbed pass read the same dropped review: with dropout on the embeddings
    # only, a vanishing perturbation moves nothing in training (when each pass dropped the embedding
    # itself, the KL measured two dropout masks and the perturbation was dropped too)
    torch.manual_seed(0)
    model = SequenceClassifier(
        vocab_size=30, encoder={"embed_dim": 8, "hidden_size": 12, "embed_dropout": 0.5}, adversarial={"mode": "vat"}
    )
    model.token_frequencies.copy_(torch.rand(30) + 0.1)
    model.train()  # head_dropout is 0: the embeddings' dropout is the only one
    tokens, lengths = torch.randint(1, 30, (4, 6)), torch.tensor([6, 6, 6, 6])
    embedded = model.embed(tokens)
    assert 0.3 < (embedded == 0).float().mean() < 0.7  # the embeddings arrive dropped
    kl = virtual_adversarial_loss(model.logits_from, embedded, lengths, 1e-4, 0.1, 1)
    assert kl < 1e-7  # each pass dropping the embeddings itself gave 2.8e-6 here


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16-autocast"])
def test_the_power_iteration_finds_the_most_sensitive_direction(autocast):
    # with one logit the KL's curvature has one direction, the logit's gradient: the power iteration must
    # find it for every review of a realistic length, also under mixed precision (with a probe of norm
    # 1e-6 the KL did not move at all and most reviews got no perturbation)
    torch.manual_seed(0)
    model = SequenceClassifier(
        vocab_size=300, encoder={"embed_dim": 32, "hidden_size": 32}, adversarial={"mode": "vat"}
    )
    model.token_frequencies.copy_(torch.rand(300) + 0.1)
    model.eval()
    tokens, lengths = torch.randint(1, 300, (4, 100)), torch.tensor([100, 90, 60, 30])
    embedded = model.embed(tokens).detach().requires_grad_()
    (uphill,) = torch.autograd.grad(model.logits_from(embedded, lengths).sum(), embedded)
    with torch.no_grad():
        clean = model.logits_from(embedded, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        found = sensitive_direction(model.logits_from, embedded, lengths, clean, model.adversarial.xi, 1)
    assert found.dtype == torch.float32 and (found[3, 30:] == 0).all()
    assert torch.allclose(found.flatten(1).norm(dim=1), torch.ones(4))  # every review is perturbed
    cosine = (found.flatten(1) * F.normalize(uphill.flatten(1), dim=1)).sum(1).abs()
    assert (cosine > 0.9).all(), cosine


# the batch sizes of the passes: the supervised pass (labelled), AT's perturbed labelled pass, VAT's three
@pytest.mark.parametrize(("mode", "passes"), [("vat", [2, 3, 3, 3]), ("atvat", [2, 2, 3, 3, 3])])
def test_unlabelled_reviews_reach_the_vat_term_and_never_the_supervised_loss(mode, passes):
    model = classifier(adversarial={"mode": mode}).train()
    model.log = lambda *args, **kwargs: None  # no trainer here to log to
    model.log_dict = lambda *args, **kwargs: None
    labelled = Batch(torch.randint(1, 30, (2, 5)), torch.tensor([5, 3]), torch.tensor([1.0, 0.0]))
    unlabelled = Batch(torch.randint(1, 30, (3, 4)), torch.tensor([4, 4, 2]), torch.full((3,), -1.0))
    seen = []
    logits_from = model.logits_from
    model.logits_from = lambda e, n: (seen.append(e.size(0)), logits_from(e, n))[1]
    losses = []
    loss = model.loss
    model.loss = lambda logits, targets: (losses.append(targets.clone()), loss(logits, targets))[1]
    total = model.training_step({"labelled": labelled, "unlabelled": unlabelled}, 0)
    assert total.requires_grad and seen == passes
    assert all(torch.equal(t, labelled.targets) for t in losses)  # only the labels of the labelled batch


@pytest.mark.parametrize(("step", "weight"), [(0, 0.5), (2, 1.5), (3, 2.0), (50, 2.0)])
def test_the_adversarial_weight_ramps_up_over_the_warmup_steps(step, weight, monkeypatch):
    monkeypatch.setattr(SequenceClassifier, "global_step", property(lambda self: step))
    model = classifier(adversarial={"mode": "vat", "weight": 2.0, "warmup_steps": 4}).train()
    logged = {}
    model.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    model.log_dict = lambda *args, **kwargs: None
    labelled = Batch(torch.randint(1, 30, (3, 7)), torch.tensor([7, 4, 2]), torch.tensor([1.0, 0.0, 1.0]))
    total = model.training_step(labelled, 0)
    assert logged["train/adv_weight"] == weight
    torch.testing.assert_close(total, logged["train/loss_supervised"] + weight * logged["train/loss_vat"])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("mode", MODES)
def test_every_cell_and_direction_learns_from_the_adversarial_term(mode, cell, bidirectional):
    torch.manual_seed(0)
    encoder = {"cell": cell, "embed_dim": 8, "hidden_size": 12, "bidirectional": bidirectional}
    model = SequenceClassifier(vocab_size=30, encoder=encoder, pooling="concat", adversarial={"mode": mode}).train()
    model.token_frequencies.copy_(torch.rand(30) + 0.1)
    logged = {}
    model.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    model.log_dict = lambda *args, **kwargs: None
    labelled = Batch(torch.randint(1, 30, (3, 7)), torch.tensor([7, 4, 2]), torch.tensor([1.0, 0.0, 1.0]))
    unlabelled = Batch(torch.randint(1, 30, (2, 6)), torch.tensor([6, 3]), torch.full((2,), -1.0))
    total = model.training_step({"labelled": labelled, "unlabelled": unlabelled}, 0)
    total.backward()
    terms = [logged[f"train/loss_{term}"] for term in terms_of(mode)]
    assert all(term > 0 for term in terms) and total > logged["train/loss_supervised"]
    torch.testing.assert_close(total, logged["train/loss_supervised"] + sum(terms))  # no ramp: weight 1
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.encoder.embedding.weight.grad.abs().sum() > 0


def test_vat_trains_under_ddp_and_mixed_precision(compose_cfg, tmp_path):
    # the extra forward and backward passes of the power iteration run in every rank, under autocast
    cfg = compose_cfg(
        "experiment=imdb_vat",
        "model.pretrained=null",
        "trainer=ddp_cpu",
        "trainer.precision=bf16-mixed",
        *TINY,
        *SMALL,
        "data.batch_size=2",
        "trainer.max_epochs=1",
        output_dir=tmp_path / "ddp",
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed" and Path(metrics["best_checkpoint"]).is_file()  # it trained
    assert metrics["train/loss_vat"] > 0 and math.isfinite(metrics["test/loss"])


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_trains_and_its_checkpoint_evaluates_as_any_other(mode, compose_cfg, tmp_path):
    run = tmp_path / mode
    cfg = compose_cfg(
        "experiment=imdb_vat",
        "model.pretrained=null",
        f"model.adversarial.mode={mode}",
        *TINY,
        *SMALL,
        "trainer.max_epochs=1",
        output_dir=run,
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed" and "test/acc" in metrics
    logged = torch.load(metrics["best_checkpoint"], weights_only=True)
    assert logged["state_dict"]["token_frequencies"].sum() == pytest.approx(1.0)  # normalised by the training text
    again = evaluate(
        compose_cfg(f"ckpt_path={metrics['best_checkpoint']}", config_name="eval", output_dir=tmp_path / "e")
    )
    assert again["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    ask = compose_cfg(f"ckpt_path={metrics['best_checkpoint']}", "text='a fine film'", config_name="predict")
    first, second = predict(ask), predict(ask)  # no perturbation, no dropout at inference
    assert first["probability"].tolist() == second["probability"].tolist()
    assert first.loc[0, "p_negative"] + first.loc[0, "p_positive"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"mode": "fgsm"}, r"model.adversarial.mode='fgsm' is not allowed; choose null \| at \| vat \| atvat"),
        ({"mode": "vat", "epsilon": 0}, r"model.adversarial.epsilon must be > 0, got 0"),
        ({"iterations": 0}, r"model.adversarial.iterations must be >= 1, got 0"),
        ({"warmup_steps": -1}, r"model.adversarial.warmup_steps must be >= 0, got -1"),
        ({"eps": 1.0}, r"model.adversarial.eps is not an adversarial setting; allowed: mode, epsilon"),
        ("vat", r"model.adversarial=vat is now model.adversarial.mode=vat"),
    ],
)
def test_a_bad_adversarial_setting_is_refused_in_one_line_naming_its_key(node, message):
    with pytest.raises(ConfigError, match=message) as raised:
        classifier(adversarial=node)
    assert "\n" not in str(raised.value)


def test_a_checkpoint_with_the_old_flat_adversarial_settings_still_loads(tmp_path):
    model = classifier(
        adversarial={"mode": "atvat", "epsilon": 3.0, "warmup_steps": 7, "xi": 0.2, "same_dropout": True}
    )
    # the hyper-parameters as SequenceClassifier saved them before model.adversarial was one node
    flat = {k: v for k, v in model.hparams.items() if k != "adversarial"}
    flat.update(adversarial="atvat", adv_epsilon=3.0, adv_weight=1.0, adv_warmup_steps=7, vat_xi=0.2)
    flat.update(vat_iterations=1, vat_same_dropout=True, normalize_embeddings=None)
    config = {"model": {"_target_": "rnnlab.models.classifier.SequenceClassifier"}}
    config["data"] = {"_target_": "rnnlab.data.imdb.IMDBDataModule"}
    path = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": flat, "state_dict": model.state_dict(), CONFIG_KEY: config}, path)
    loaded = Checkpoint.open(path).model()
    assert loaded.adversarial == model.adversarial and loaded.normalized
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    assert AdversarialSettings.nest(model.hparams) == dict(model.hparams)  # a new checkpoint is left as it is
