"""train.precision auto chooses by timing training steps; inference's auto times bf16 rather than assuming it."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from tests.conftest import TINY, train_tiny
from training import precision_probe, train
from training.config import load_config
from training.precision_probe import (
    PrecisionChoice,
    measure_training_precision,
    training_candidates,
)


def fake_steps(monkeypatch, seconds: dict[str, float]) -> list[str]:
    """Replace the timed steps with fixed seconds per step; returns the precisions that were timed."""
    timed: list[str] = []

    def fake(model, batch, precision, steps, budget_s=float("inf"), give_up_s=float("inf")):
        timed.append(precision)
        return seconds[precision]

    monkeypatch.setattr(precision_probe, "time_training_step", fake)
    return timed


def tiny_encoder(tmp_path, *overrides: str):
    """A 3-layer BERT saved as a pretrained checkpoint, its config, model, tokenizer and a training dataset."""
    from transformers import BertConfig, BertModel, BertTokenizer

    from runtime.taxonomy import load_taxonomy
    from training.data import load_examples, to_dataset
    from training.model import build_model

    taxonomy = load_taxonomy()
    examples = load_examples(["labels/seed_units.jsonl"], taxonomy)[:48]
    chars = sorted({c for ex in examples for c in ex.text})
    BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *chars])}
                  ).save_pretrained(tmp_path)
    BertModel(BertConfig(vocab_size=len(chars) + 4, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path)
    # Nothing frozen and the encoder alone, unlike the default recipe: a 3-layer body to time.
    cfg = load_config(None, [f"model.name_or_path={tmp_path}", "model.pooling=mean", "train.batch_size=8",
                             "data.max_length=32", "model.freeze_layers=0", "model.freeze_word_embeddings=false",
                             "model.dropout=null", "model.text_prefix=", "model.tfidf_fusion=false",
                             "train.head_learning_rate=0", *overrides])
    model, tokenizer = build_model(cfg.model, taxonomy, [], cfg.data.max_length)
    return cfg, model, tokenizer, to_dataset(examples, taxonomy, tokenizer, cfg.data.max_length)


def test_fp16_is_never_a_cpu_candidate_and_bf16_only_where_offered(monkeypatch) -> None:
    monkeypatch.setattr(precision_probe, "cpu_offers_bf16", lambda: True)
    assert training_candidates("cpu") == ["fp32", "bf16"]
    monkeypatch.setattr(precision_probe, "cpu_offers_bf16", lambda: False)
    assert training_candidates("cpu") == ["fp32"]


@pytest.mark.parametrize("bf16_seconds, chosen", [(0.83, "fp32"), (0.2, "bf16"), (0.4, "fp32")])
def test_auto_takes_the_measured_fastest(monkeypatch, bf16_seconds, chosen) -> None:
    import torch

    timed = fake_steps(monkeypatch, {"fp32": 0.41, "bf16": bf16_seconds})
    choice = measure_training_precision(torch.nn.Linear(2, 2), {}, ["fp32", "bf16"])
    assert timed == ["fp32", "bf16"]
    assert choice.precision == chosen and choice.timings == {"fp32": 0.41, "bf16": bf16_seconds}
    if bf16_seconds == 0.4:  # faster, but by less than the bar: a tie within noise keeps fp32
        assert "under the 1.05x bar" in choice.reason


def test_step_timer_runs_a_warm_up_then_stops_at_its_budget_or_gives_up() -> None:
    import torch

    class Counting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear, self.calls = torch.nn.Linear(4, 1), 0

        def forward(self, x):
            self.calls += 1
            return type("Out", (), {"loss": self.linear(x).sum()})()

    batch = {"x": torch.ones(2, 4)}
    for kwargs, calls in [({}, 4), ({"budget_s": 0.0}, 2), ({"give_up_s": 0.0}, 1)]:
        model = Counting()
        assert precision_probe.time_training_step(model, batch, "fp32", 3, **kwargs) > 0
        assert model.calls == calls, kwargs
        assert model.linear.weight.grad is None


def test_bf16_slower_on_a_bf16_cpu_trains_fp32_and_says_why(tmp_path, monkeypatch, caplog) -> None:
    # The issue's Xeon: the CPU offers bf16, and bf16 steps take twice as long as fp32's.
    monkeypatch.setattr(train, "_MEASURED", {})
    monkeypatch.setattr(train, "training_candidates", lambda device: ["fp32", "bf16"])
    fake_steps(monkeypatch, {"fp32": 0.41, "bf16": 0.83})
    cfg, model, tokenizer, dataset = tiny_encoder(tmp_path)
    with caplog.at_level(logging.INFO, logger="training"):
        choice = train.choose_precision(cfg, model, tokenizer, dataset)
    assert choice.precision == "fp32" and choice.reason == "fastest; bf16 0.49x fp32's speed"
    assert "precision auto: fp32 0.41 s/step, bf16 0.83 s/step -> fp32 (fastest; bf16 0.49x fp32's speed)" \
        in caplog.messages

    # Where bf16 is faster it is chosen.
    monkeypatch.setattr(train, "_MEASURED", {})
    fake_steps(monkeypatch, {"fp32": 0.41, "bf16": 0.2})
    assert train.choose_precision(cfg, model, tokenizer, dataset).precision == "bf16"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_explicit_precision_is_obeyed_without_probing(tmp_path, monkeypatch, precision) -> None:
    monkeypatch.setattr(train, "training_candidates", lambda device: ["fp32", "bf16"])
    timed = fake_steps(monkeypatch, {"fp32": 0.1, "bf16": 9.9})
    cfg, model, tokenizer, dataset = tiny_encoder(tmp_path, f"train.precision={precision}")
    choice = train.choose_precision(cfg, model, tokenizer, dataset)
    assert choice == PrecisionChoice(precision, "set by train.precision") and timed == []
    assert train.frozen_encoder(cfg).bf16 == (precision == "bf16")


def test_auto_alone_never_gives_the_frozen_baseline_bf16(tmp_path) -> None:
    cfg, *_ = tiny_encoder(tmp_path)
    assert cfg.train.precision == "auto"
    assert train.frozen_encoder(cfg).bf16 is False
    assert train.frozen_encoder(cfg, "bf16").bf16 is True


def test_real_probe_times_every_candidate_and_leaves_the_model_as_it_was(tmp_path, monkeypatch) -> None:
    import torch

    # Frozen lower layers and no dropout: the probe times the steps with the frozen-layer cache active.
    cfg, model, tokenizer, dataset = tiny_encoder(tmp_path, "model.freeze_layers=2", "model.dropout=0.0")
    monkeypatch.setattr(train, "_MEASURED", {})
    monkeypatch.setattr(train, "training_candidates", lambda device: ["fp32", "bf16"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    # Buffers too: the mean-pooled head's BatchNorm counts and averages every batch seen in training mode.
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    assert any(name.startswith("pooled_norm.") for name in buffers)
    rng = torch.get_rng_state()
    model.eval()
    choice = train.choose_precision(cfg, model, tokenizer, dataset)
    assert choice.precision in ("fp32", "bf16") and choice.reason
    assert set(choice.timings) == {"fp32", "bf16"} and all(t > 0 for t in choice.timings.values())
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
        assert param.grad is None, name
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    assert torch.equal(torch.get_rng_state(), rng) and not model.training
    assert "forward" not in model.base_model.embeddings.__dict__  # the probe's cache is gone


def test_auto_choice_reaches_the_artifact_and_the_report(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(train, "_MEASURED", {})
    monkeypatch.setattr(train, "training_candidates", lambda device: ["fp32", "bf16"])
    fake_steps(monkeypatch, {"fp32": 0.41, "bf16": 0.83})
    assert "train.precision=fp32" in TINY
    out = train_tiny(tmp_path / "auto", "train.precision=auto", "train.epochs=1")
    meta = json.loads((out / "artifact.json").read_text(encoding="utf-8"))
    assert meta["precision"] == "fp32" and meta["precision_timings"] == {"fp32": 0.41, "bf16": 0.83}
    assert meta["precision_reason"] == "fastest; bf16 0.49x fp32's speed"
    assert "Training precision auto: fp32 0.41 s/step, bf16 0.83 s/step -> fp32" in (out / "report.md").read_text()


def test_inference_auto_times_bf16_where_the_cpu_offers_it(tmp_path, monkeypatch) -> None:
    from runtime import precision, threads
    from runtime.classifier import Classifier

    _, model, tokenizer, dataset = tiny_encoder(tmp_path)
    monkeypatch.setattr(threads, "cpu_offers_bf16", lambda: True)
    clf = Classifier(model, tokenizer, ["a", "b", "c", "d", "e", "f"], [0.5] * 6, "other", 32)
    assert "bf16" in clf.available_precisions() and "fp16" not in clf.available_precisions()
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in dataset["input_ids"][:24]]
    reference = clf.probabilities(texts)
    seconds = {"fp32": 1.0, "bf16": 2.0}

    def fake(classifier, option, encoded):  # fp32's probabilities for every option: agreement 1, speed decides
        classifier.set_precision(option)
        return seconds.get(option, 5.0), reference.copy()

    monkeypatch.setattr(precision, "time_scoring", fake)
    report = precision.measure(clf, texts)
    assert report["precision"] == "fp32"
    assert "bf16" in report["options"]  # measured, then not taken: slower
    seconds["bf16"] = 0.5
    assert precision.measure(clf, texts)["precision"] == "bf16"
    clf.set_precision("bf16")
    np.testing.assert_allclose(clf.probabilities(texts), reference, atol=0.05)
