"""training.train's optimizer (two learning rates, weight decay by parameter kind) and the BCE pos_weight,
on a tiny randomly initialised BERT built as training builds one."""

from __future__ import annotations

import pytest
import torch

from runtime.taxonomy import load_taxonomy
from tests.conftest import TINY
from training.config import load_config
from training.data import Splits, load_examples
from training.model import build_model
from training.train import make_optimizer, weighted_bce

TEXTS = ["推动氢能全产业链协同发展", "发展低空经济和商业航天", "上一篇 2024年9月24日", "人形机器人产业"]


def config(*overrides: str):
    return load_config("configs/offline-small.yaml", [*TINY, *overrides])


def tiny_model(cfg=None):
    cfg = cfg or config()
    torch.manual_seed(0)
    return build_model(cfg.model, load_taxonomy(), TEXTS, cfg.data.max_length)


def settings_by_name(model, optimizer) -> dict[str, tuple[float, float]]:
    """Parameter name -> (lr, weight_decay) of the one group that holds it."""
    where: dict[int, tuple[float, float]] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            assert id(param) not in where, "a parameter in two groups"
            where[id(param)] = (group["lr"], group["weight_decay"])
    return {name: where[id(param)] for name, param in model.named_parameters() if id(param) in where}


def test_head_and_pooler_get_the_head_learning_rate_and_the_body_the_base_one() -> None:
    cfg = config("train.learning_rate=2e-5", "train.head_learning_rate=3e-3", "train.weight_decay=0.05")
    model, _ = tiny_model(cfg)
    settings = settings_by_name(model, make_optimizer(model, cfg))
    assert set(settings) == {name for name, _ in model.named_parameters()}  # every trainable parameter, once
    head, body, decay = 3e-3, 2e-5, 0.05
    expected = {
        # the new head and the pooler: the head's rate; weight decay on matrices only
        "classifier.weight": (head, decay),
        "classifier.bias": (head, 0.0),
        "bert.pooler.dense.weight": (head, decay),
        "bert.pooler.dense.bias": (head, 0.0),
        # the body: the base rate; no decay on biases and LayerNorm weights
        "bert.embeddings.word_embeddings.weight": (body, decay),
        "bert.embeddings.position_embeddings.weight": (body, decay),
        "bert.embeddings.LayerNorm.weight": (body, 0.0),
        "bert.embeddings.LayerNorm.bias": (body, 0.0),
        "bert.encoder.layer.0.attention.self.query.weight": (body, decay),
        "bert.encoder.layer.0.attention.self.query.bias": (body, 0.0),
        "bert.encoder.layer.0.attention.output.LayerNorm.weight": (body, 0.0),
        "bert.encoder.layer.0.intermediate.dense.weight": (body, decay),
        "bert.encoder.layer.0.output.dense.bias": (body, 0.0),
        "bert.encoder.layer.0.output.LayerNorm.weight": (body, 0.0),
    }
    for name, (lr, weight_decay) in expected.items():
        assert settings[name] == (pytest.approx(lr), pytest.approx(weight_decay)), name
    # Only the head and pooler are at the head's rate.
    assert {name for name, (lr, _) in settings.items() if lr == pytest.approx(head)} == {
        "classifier.weight", "classifier.bias", "bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    # At most the four groups (head/body x decay/no decay), none empty.
    assert len(make_optimizer(model, cfg).param_groups) == 4


def test_head_learning_rate_zero_means_the_base_learning_rate() -> None:
    cfg = config("train.learning_rate=7e-4", "train.head_learning_rate=0")
    model, _ = tiny_model(cfg)
    optimizer = make_optimizer(model, cfg)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([7e-4] * 4)
    assert settings_by_name(model, optimizer)["classifier.weight"][0] == pytest.approx(7e-4)


def test_frozen_parameters_are_left_out() -> None:
    cfg = config("train.head_learning_rate=1e-2")
    model, _ = tiny_model(cfg)
    model.bert.embeddings.requires_grad_(False)
    settings = settings_by_name(model, make_optimizer(model, cfg))
    assert not any(name.startswith("bert.embeddings.") for name in settings)
    assert "bert.encoder.layer.0.attention.self.query.weight" in settings and "classifier.weight" in settings


def test_the_pooled_models_norm_is_part_of_the_head() -> None:
    # Pretrained encoders get PooledBertForSequenceClassification; with mean pooling its head has a norm.
    from runtime.modeling import PooledBertConfig, PooledBertForSequenceClassification

    cfg = config("train.learning_rate=1e-5", "train.head_learning_rate=1e-3", "train.weight_decay=0.1")
    model = PooledBertForSequenceClassification(PooledBertConfig(
        pooling="mean", vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, num_labels=6))
    settings = settings_by_name(model, make_optimizer(model, cfg))
    assert "pooled_norm.weight" in settings and not any(name.startswith("bert.pooler.") for name in settings)
    assert settings["pooled_norm.weight"] == (pytest.approx(1e-3), 0.0)
    assert settings["pooled_norm.bias"] == (pytest.approx(1e-3), 0.0)
    assert settings["classifier.weight"] == (pytest.approx(1e-3), pytest.approx(0.1))
    assert settings["bert.encoder.layer.0.output.dense.weight"] == (pytest.approx(1e-5), pytest.approx(0.1))


def test_one_step_moves_each_group_at_its_own_rate_and_decays_only_matrices() -> None:
    """What the groups mean to AdamW. With zero gradients a step is weight decay alone: a matrix
    shrinks by (1 - lr * weight_decay) of its own group; biases and LayerNorm weights stay put. With real
    gradients AdamW's first step moves a parameter by about lr: the head about 100x the body."""
    cfg = config("train.learning_rate=1e-4", "train.head_learning_rate=1e-2", "train.weight_decay=0.5")
    model, tokenizer = tiny_model(cfg)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = make_optimizer(model, cfg, fused=False)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["classifier.weight"].detach(), before["classifier.weight"] * (1 - 1e-2 * 0.5))
    torch.testing.assert_close(after["bert.encoder.layer.0.intermediate.dense.weight"].detach(),
                               before["bert.encoder.layer.0.intermediate.dense.weight"] * (1 - 1e-4 * 0.5))
    for name in ("classifier.bias", "bert.embeddings.LayerNorm.weight", "bert.encoder.layer.0.output.dense.bias"):
        torch.testing.assert_close(after[name].detach(), before[name], rtol=0, atol=0)

    cfg = config("train.learning_rate=1e-4", "train.head_learning_rate=1e-2", "train.weight_decay=0")
    model, tokenizer = tiny_model(cfg)
    model.eval()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = make_optimizer(model, cfg, fused=False)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    model(**batch, labels=torch.ones(len(TEXTS), 6)).loss.backward()
    optimizer.step()
    moved = {name: (p.detach() - before[name]).abs().max().item() for name, p in model.named_parameters()}
    assert moved["classifier.bias"] == pytest.approx(1e-2, rel=1e-3)
    assert moved["bert.encoder.layer.0.output.dense.bias"] == pytest.approx(1e-4, rel=1e-3)


# ----------------------------------------------------------------------------- pos_weight


def test_weighted_bce_scales_the_positive_term() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 0.0, 1.5]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    sig = torch.sigmoid(logits)
    positive, negative = -(labels * torch.log(sig)), -((1 - labels) * torch.log(1 - sig))
    for pos_weight in (1.0, 2.5):
        expected = (pos_weight * positive + negative).mean()
        torch.testing.assert_close(weighted_bce(pos_weight)({"logits": logits}, labels), expected)
    # An all-positive row: the loss is exactly pos_weight times plain BCE.
    ones = torch.ones(1, 3)
    plain = weighted_bce(1.0)({"logits": logits[:1]}, ones)
    torch.testing.assert_close(weighted_bce(3.0)({"logits": logits[:1]}, ones), 3 * plain)


def test_pos_weight_above_one_raises_the_loss_of_a_positive_example_on_the_model() -> None:
    model, tokenizer = tiny_model()
    model.eval()
    batch = tokenizer(["推动氢能全产业链协同发展"], return_tensors="pt")
    labels = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]])  # future_energy
    with torch.no_grad():
        outputs = model(**batch, labels=labels)
    plain = weighted_bce(1.0)(outputs, labels)
    # pos_weight 1 is the model's own loss, so fit() may leave the hook out for it.
    torch.testing.assert_close(plain, outputs.loss)
    weighted = weighted_bce(4.0)(outputs, labels)
    assert weighted > plain
    # The increase is exactly the extra weight on the one positive term, averaged over the six directions.
    positive_term = -torch.nn.functional.logsigmoid(outputs.logits[0, 3])
    torch.testing.assert_close(weighted - plain, 3 * positive_term / 6)
    # A unit with no direction (other) has no positive term: pos_weight changes nothing.
    none = torch.zeros(1, 6)
    torch.testing.assert_close(weighted_bce(4.0)(outputs, none), weighted_bce(1.0)(outputs, none))


class _Stop(Exception):
    pass


@pytest.mark.parametrize("pos_weight", [1.0, 3.0])
def test_train_pos_weight_reaches_the_trainers_loss(pos_weight, tmp_path, monkeypatch) -> None:
    """fit() builds the Trainer; stop it at train() and compute the Trainer's own loss on a training batch."""
    from training import train

    taxonomy = load_taxonomy()
    examples = load_examples(["labels/seed_units.jsonl"], taxonomy)
    splits = Splits(train=examples[:48], val=examples[48:64], test=[])
    seen = {}
    real = train.in_order_eval_trainer

    def capturing():
        class Capturing(real()):
            def train(self, *args, **kwargs):
                self.model.eval()  # no dropout: the loss is a function of the batch alone
                batch = next(iter(self.get_train_dataloader()))
                seen["labels"] = batch["labels"].clone()
                seen["hook"] = self.compute_loss_func
                with torch.no_grad():
                    seen["loss"] = self.compute_loss(self.model, dict(batch))
                    inputs = {k: v for k, v in batch.items() if k != "labels"}
                    seen["logits"] = self.model(**inputs).logits
                raise _Stop

        return Capturing

    monkeypatch.setattr(train, "in_order_eval_trainer", capturing)
    cfg = config(f"train.pos_weight={pos_weight}")
    with pytest.raises(_Stop):
        train.fit(cfg, splits, taxonomy, tmp_path / "work", progress=False)
    labels, logits = seen["labels"], seen["logits"]
    assert labels.sum() > 0, "the batch needs a positive label for pos_weight to matter"
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, labels, pos_weight=torch.full((6,), pos_weight))
    torch.testing.assert_close(seen["loss"], expected)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    if pos_weight == 1:
        assert seen["hook"] is None  # the model's own BCE
    else:
        assert seen["hook"] is not None and seen["loss"] > plain
