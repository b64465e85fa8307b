"""Training end to end on a tiny model: artifact contents, reload and retrain determinism, clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from runtime.classifier import Classifier
from runtime.text import PREPROCESSING_VERSION, split_units
from tests.conftest import TINY, train_tiny

pytestmark = pytest.mark.slow


def seed_texts() -> list[str]:
    from pathlib import Path

    return [u.text for p in sorted(Path("seeds").glob("*.txt")) for u in split_units(p.read_text(encoding="utf-8"))]


def test_artifact_is_self_describing(tiny_artifact) -> None:
    for name in ["config.json", "model.safetensors", "tokenizer.json", "artifact.json", "labels.json",
                 "thresholds.json", "config.yaml", "metrics.json", "report.md", "cooccurrence.png"]:
        assert (tiny_artifact / name).is_file(), name
    meta = json.loads((tiny_artifact / "artifact.json").read_text())
    assert meta["preprocessing_version"] == PREPROCESSING_VERSION
    assert meta["directions"] == ["future_manufacturing", "future_information", "future_materials",
                                  "future_energy", "future_space", "future_health"]
    assert len(meta["thresholds"]) == 6 and meta["other"] == "other"
    # The headline figures are the model's row of metrics.json (the test-set recomputation is below).
    reported = json.loads((tiny_artifact / "metrics.json").read_text())["test"]["model"]
    assert {k: meta["metrics"][k] for k in ("micro_f1", "macro_f1", "macro_f1_directions", "exact_match")} == \
        {k: reported[k] for k in ("micro_f1", "macro_f1", "macro_f1_directions", "exact_match")}
    report = (tiny_artifact / "report.md").read_text()
    for system in ("| model |", "| tfidf+logreg |", "| cue rules |"):
        assert system in report
    model_config = json.loads((tiny_artifact / "config.json").read_text())
    assert model_config["id2label"]["0"] == "future_manufacturing"
    # Weights as readable as the rest (transformers writes model.safetensors 0600).
    modes = {p.name: p.stat().st_mode & 0o777 for p in tiny_artifact.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == modes["config.json"] == modes["report.md"], modes
    assert model_config["problem_type"] == "multi_label_classification"


def test_reloaded_artifact_predicts_identically(tiny_artifact, tmp_path) -> None:
    texts = seed_texts()
    first = Classifier.from_artifact(tiny_artifact)
    second = Classifier.from_artifact(tiny_artifact, batch_size=7)  # different batching, same answers
    p1, p2 = first.probabilities(texts), second.probabilities(texts)
    np.testing.assert_allclose(p1, p2, atol=1e-5)
    assert [p.labels for p in first.predict(texts, already_clean=True)] == \
           [p.labels for p in second.predict(texts, already_clean=True)]
    for pred in first.predict(["氢能产业链", "上一篇"]):
        assert pred.labels and set(pred.scores) == set(first.labels)
        assert pred.labels == ["other"] or "other" not in pred.labels


def test_fused_artifact_averages_encoder_and_tfidf(tiny_artifact, tmp_path) -> None:
    import shutil

    from runtime.errors import ArtifactError
    from runtime.lexical import LexicalModel

    meta = json.loads((tiny_artifact / "artifact.json").read_text())
    assert meta["tfidf_fusion"] is True and LexicalModel.present(tiny_artifact)
    report = (tiny_artifact / "report.md").read_text()
    assert "| encoder alone |" in report and "model.tfidf_fusion" in report
    clf = Classifier.from_artifact(tiny_artifact)
    texts = seed_texts()[:40]
    encoder, lexical = clf.probabilities(texts, fused=False), LexicalModel.load(tiny_artifact).probabilities(texts)
    np.testing.assert_allclose(clf.probabilities(texts), (encoder + lexical) / 2, atol=1e-6)
    scores = [pred.scores for pred in clf.predict(texts, already_clean=True)]
    np.testing.assert_allclose([[s[d] for d in clf.directions] for s in scores], (encoder + lexical) / 2, atol=1e-4)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_artifact, broken)
    (broken / "tfidf_weights.npz").write_bytes(b"not a zip file")
    with pytest.raises(ArtifactError, match="TF-IDF files cannot be read"):
        Classifier.from_artifact(broken)
    (broken / "tfidf_weights.npz").unlink()
    with pytest.raises(ArtifactError, match="TF-IDF files are missing"):
        Classifier.from_artifact(broken)


def test_lexical_model_scores_like_scikit_learn_and_round_trips(tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from runtime.lexical import LexicalModel

    texts = seed_texts()[:120]
    y = np.zeros((len(texts), 3), dtype=np.float32)
    y[:, 0] = ["氢" in t or "能源" in t for t in texts]
    y[:, 1] = ["产业" in t for t in texts]  # column 2 stays empty: a constant predictor
    model = LexicalModel.fit(texts, y, seed=1)
    reference = OneVsRestClassifier(LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000,
                                                       random_state=1))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference.fit(model.vectorizer.transform(texts), y)
    expected = reference.predict_proba(model.vectorizer.transform(texts))
    np.testing.assert_allclose(model.probabilities(texts), expected, atol=1e-6)
    model.save(tmp_path)
    np.testing.assert_allclose(LexicalModel.load(tmp_path).probabilities(texts), expected, atol=1e-6)
    assert LexicalModel.load(tmp_path).probabilities([]).shape == (0, 3)


def test_same_seed_retrains_to_the_same_model(tiny_artifact, tmp_path) -> None:
    again = train_tiny(tmp_path / "again")
    texts = seed_texts()
    np.testing.assert_array_equal(Classifier.from_artifact(tiny_artifact).probabilities(texts),
                                  Classifier.from_artifact(again).probabilities(texts))
    assert (json.loads((again / "thresholds.json").read_text())
            == json.loads((tiny_artifact / "thresholds.json").read_text()))


def test_cross_validation_writes_a_report(tmp_path) -> None:
    from training.train import main

    args = ["--config", "configs/offline-small.yaml", "--quiet", "--cv", "2", "--set", f"output_dir={tmp_path}/cv"]
    # The encoder alone (no model.tfidf_fusion): the report then shows the fusion row beside it.
    for item in [*TINY, "train.epochs=1", "model.tfidf_fusion=false",
                 "data.label_files=[labels/seed_units.jsonl, labels/authored/future_energy.jsonl]"]:
        args += ["--set", item]
    assert main(args) == 0
    report = (tmp_path / "cv-cv2" / "report.md").read_text()
    assert "real + authored" in report and "real only" in report and "±" in report
    metrics = json.loads((tmp_path / "cv-cv2" / "metrics.json").read_text())
    assert len(metrics["folds"]["real only"]) == 2
    # The yardstick holds out whole pages and says so; the rule x fusion table and its probabilities are kept.
    assert metrics["split_by"] == "page" and "grouped by page" in report and "each of the 5 pages sits whole" in report
    assert set(metrics["decision"]) == {"encoder alone", "encoder + tfidf mean"}
    assert "| encoder + tfidf mean |" in report and "real out-of-fold thresholds" in report
    kept = np.load(tmp_path / "cv-cv2" / "probabilities.npz")
    assert {"fold0_encoder_test", "fold1_tfidf_val", "fold1_y_test"} <= set(kept.files)
    # The late-fusion row is reported beside the baselines but never counted as one.
    from training.train import FUSION

    assert all(FUSION in fold for fold in metrics["folds"]["real only"]) and f"| {FUSION} |" in report
    verdict_line = next(line for line in report.splitlines() if line.startswith("The model"))
    assert FUSION not in verdict_line, verdict_line


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.train", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_unresolvable_model_name_fails_with_one_clear_message(tmp_path) -> None:
    result = run_cli("--config", "configs/bert-base-chinese.yaml", "--set", f"output_dir={tmp_path}",
                     "--set", "model.name_or_path=no-such-org/no-such-bert",
                     "--set", "data.label_files=[labels/seed_units.jsonl]",
                     env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Cannot load the pretrained model 'no-such-org/no-such-bert'" in result.stderr
    for hint in ("model.name_or_path", "HF_ENDPOINT", "configs/offline-small.yaml"):
        assert hint in result.stderr


def test_bad_override_on_the_command_line(tmp_path) -> None:
    result = run_cli("--config", "configs/offline-small.yaml", "--set", "train.epoch=3")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown config key(s) train.epoch" in result.stderr


@pytest.mark.parametrize("precision, max_diff", [("bf16", 0.03), ("int8", 0.05), ("onnx", 1e-4), ("onnx-int8", 0.05)])
def test_faster_precisions_stay_close_to_fp32(tiny_artifact, precision, max_diff) -> None:
    texts = seed_texts()
    reference = Classifier.from_artifact(tiny_artifact)
    fast = Classifier.from_artifact(tiny_artifact)
    if precision not in fast.available_precisions():
        pytest.skip(f"{precision} is not offered on this machine")
    fast.set_precision(precision)
    p_ref, p_fast = reference.probabilities(texts), fast.probabilities(texts)
    assert np.abs(p_ref - p_fast).max() <= max_diff
    same = [a.labels == b.labels for a, b in zip(reference.predict(texts, already_clean=True),
                                                   fast.predict(texts, already_clean=True))]
    assert np.mean(same) >= 0.95


def test_auto_precision_keeps_agreement(tiny_artifact, tmp_path) -> None:
    import shutil

    from runtime.artifact import calibration_units
    from runtime.precision import AUTO_MIN_AGREEMENT, AUTO_MIN_UNITS, PRECISION_FILE

    # auto records its choice in the folder; a copy keeps the shared artifact as the other tests expect it.
    artifact = shutil.copytree(tiny_artifact, tmp_path / "auto")
    clf = Classifier.from_artifact(artifact, precision="auto")
    assert clf.precision in clf.available_precisions() and clf.precision_source == "decided"
    calibration = calibration_units(artifact)
    # Enough units that auto measured instead of falling back to fp32 untimed.
    assert calibration and len(calibration) >= AUTO_MIN_UNITS
    record = json.loads((artifact / PRECISION_FILE).read_text())
    assert record["precision"] == clf.precision and clf.precision in record["options"]
    # The choice, as loaded now, gives fp32's label sets on the calibration units.
    fp32 = Classifier.from_artifact(artifact, precision="fp32")
    assert fp32.precision == "fp32"
    chosen = [p.labels for p in clf.predict(calibration, already_clean=True)]
    reference = [p.labels for p in fp32.predict(calibration, already_clean=True)]
    agreement = np.mean([a == b for a, b in zip(chosen, reference)])
    assert agreement >= AUTO_MIN_AGREEMENT, (clf.precision, agreement)
    assert record["options"][clf.precision]["agreement_with_fp32"] >= AUTO_MIN_AGREEMENT
    with pytest.raises(ValueError, match="precision must be one of"):
        clf.set_precision("fp8")


def test_reported_metrics_are_those_of_the_artifacts_test_predictions(tiny_artifact) -> None:
    """Rebuild the held-out split from the artifact's own config, predict it with the saved model, and score
    it with training.evaluate.metrics: the figures must be the ones the artifact reports."""
    from runtime.artifact import calibration_units
    from runtime.decide import label_matrix
    from runtime.taxonomy import load_taxonomy
    from training.config import load_config
    from training.data import load_examples, make_splits, multi_hot
    from training.evaluate import metrics
    from training.train import split_real_authored

    cfg = load_config(tiny_artifact / "config.yaml")
    taxonomy = load_taxonomy(cfg.data.taxonomy)
    real, authored = split_real_authored(load_examples(cfg.data.label_files, taxonomy))
    splits = make_splits(real, authored, taxonomy, None, cfg.data.val_fraction, cfg.data.test_fraction,
                         cfg.data.authored_val_fraction, cfg.seed, cfg.data.split_by)
    # The same split training made: its validation units are the artifact's calibration units.
    assert calibration_units(tiny_artifact) == [ex.text for ex in splits.val[:256]]
    clf = Classifier.from_artifact(tiny_artifact, precision="fp32", batch_size=cfg.train.eval_batch_size)
    predicted = label_matrix(clf.predict([ex.text for ex in splits.test], already_clean=True), clf.directions)
    expected = metrics(multi_hot(splits.test, taxonomy), predicted, taxonomy)
    meta = json.loads((tiny_artifact / "artifact.json").read_text())
    reported = json.loads((tiny_artifact / "metrics.json").read_text())["test"]["model"]
    assert reported["n"] == expected["n"] == len(splits.test)
    assert reported["per_label"] == expected["per_label"]
    for key in ("micro_f1", "macro_f1", "macro_f1_directions", "exact_match"):
        assert meta["metrics"][key] == pytest.approx(expected[key], abs=1e-12), key


def test_mean_pooling_on_a_non_bert_checkpoint_says_what_to_set(tmp_path) -> None:
    from transformers import BertTokenizer, RobertaConfig, RobertaModel

    from runtime.taxonomy import load_taxonomy
    from training.model import ModelResolutionError, load_pretrained

    BertTokenizer(vocab={"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "氢": 4}).save_pretrained(tmp_path)
    RobertaModel(RobertaConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=16)).save_pretrained(tmp_path)
    with pytest.raises(ModelResolutionError, match="set model.pooling=cls") as excinfo:
        load_pretrained(str(tmp_path), load_taxonomy(), 32, pooling="mean")
    # Not dressed up as a download/offline problem: the checkpoint loaded fine, the setting is wrong.
    assert "Cannot load" not in str(excinfo.value) and "HF_ENDPOINT" not in str(excinfo.value)


def test_loading_a_pretrained_encoder_prints_no_transformers_warnings(tmp_path, capfd) -> None:
    # Every fine-tune starts with a fresh head; transformers' tables about it (missing head weights,
    # "layers were not sharded" on a plain CPU load) read like errors to a new user.
    from transformers import BertConfig, BertModel, BertTokenizer

    from runtime.taxonomy import load_taxonomy
    from training.model import load_pretrained

    BertTokenizer(vocab={"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "氢": 4}).save_pretrained(tmp_path)
    BertModel(BertConfig(vocab_size=5, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(tmp_path)
    capfd.readouterr()
    for pooling in ("mean", "cls"):
        model, _ = load_pretrained(str(tmp_path), load_taxonomy(), 32, pooling=pooling)
        assert model.config.num_labels == len(load_taxonomy().directions)
    err = capfd.readouterr().err
    assert "sharded" not in err and "newly initialized" not in err.lower() and "MISSING" not in err, err


def test_freezing_lower_layers_and_dropout_reach_the_model(tmp_path) -> None:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    from runtime.taxonomy import load_taxonomy
    from training.config import ConfigError, ModelConfig
    from training.model import build_model

    BertTokenizer(vocab={"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "氢": 4}).save_pretrained(tmp_path)
    BertModel(BertConfig(vocab_size=5, hidden_size=8, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(tmp_path)
    cfg = ModelConfig(name_or_path=str(tmp_path), pooling="mean", freeze_layers=2, dropout=0.0)
    model, tokenizer = build_model(cfg, load_taxonomy(), [], 16)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert not any(name.startswith(("bert.embeddings.", "bert.encoder.layer.0.", "bert.encoder.layer.1."))
                   for name in trainable)
    assert any(name.startswith("bert.encoder.layer.2.") for name in trainable) and "classifier.weight" in trainable
    assert model.config.hidden_dropout_prob == 0.0 and model.config.attention_probs_dropout_prob == 0.0
    # With dropout off, training-mode forward passes are deterministic; gradients reach only the top.
    model.train()
    batch = tokenizer(["氢氢", "氢"], padding=True, return_tensors="pt")
    first, second = model(**batch).logits, model(**batch).logits
    assert torch.equal(first, second)
    first.sum().backward()
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is None
    assert model.bert.encoder.layer[2].attention.self.query.weight.grad is not None
    model.save_pretrained(tmp_path / "saved")  # the artifact records the recipe's dropout
    assert '"hidden_dropout_prob": 0.0' in (tmp_path / "saved" / "config.json").read_text()
    with pytest.raises(ConfigError, match="only 3 layers"):
        build_model(ModelConfig(name_or_path=str(tmp_path), freeze_layers=4), load_taxonomy(), [], 16)
    with pytest.raises(ConfigError, match="pretrained encoders"):
        build_model(ModelConfig(name_or_path="scratch", freeze_layers=1), load_taxonomy(), ["氢"], 16)


def test_verdict_names_every_tied_baseline_and_does_not_call_a_tie_a_loss() -> None:
    from training.evaluate import verdict

    results = {"model": {"macro_f1": 0.948}, "tfidf": {"macro_f1": 0.948}, "rules": {"macro_f1": 0.948},
               "encoder alone": {"macro_f1": 1.0}}
    text = verdict(results, "model", not_baselines=["encoder alone"])
    assert text.startswith("The model ties the strongest baselines, tfidf and rules") and "NOT" not in text
    results["rules"]["macro_f1"] = 0.95
    assert "does NOT beat the strongest baseline, rules" in verdict(results, "model", not_baselines=["encoder alone"])



def test_validation_is_read_in_dataset_order_while_training_groups_by_length(tmp_path) -> None:
    # transformers 5 lets group_by_length shuffle evaluation batches too; fit() sorts the validation
    # split by length and relies on it being read in that order (less padding per batch).
    import torch
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

    from training.train import in_order_eval_trainer

    lengths = [1 + (i * 7) % 23 for i in range(300)]
    ds = Dataset.from_dict({"input_ids": [[5] * n for n in sorted(lengths)], "labels": [[0.0]] * len(lengths)})
    model = BertForSequenceClassification(BertConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=8, num_labels=1))
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=8, use_cpu=True,
                             train_sampling_strategy="group_by_length", report_to="none")

    def pad(features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        return {"input_ids": torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]),
                "labels": torch.tensor([f["labels"] for f in features])}

    trainer = in_order_eval_trainer()(model=model, args=args, train_dataset=ds, eval_dataset=ds, data_collator=pad)
    widths = [batch["input_ids"].shape[1] for batch in trainer.get_eval_dataloader()]
    assert len(widths) == -(-300 // 8) and widths == sorted(widths)
    # Training batches are still drawn by the length-grouped sampler (shuffled megabatches).
    train_widths = [batch["input_ids"].shape[1] for batch in trainer.get_train_dataloader()]
    assert train_widths != sorted(train_widths)


def test_cached_frozen_layers_give_the_full_models_logits_and_gradients(tmp_path) -> None:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    from runtime.taxonomy import load_taxonomy
    from training.config import ModelConfig
    from training.frozen_cache import FrozenLayersCache, cache_unavailable_reason
    from training.model import build_model

    chars = "氢能芯片卫星材料"
    BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                     *chars])}).save_pretrained(tmp_path)
    BertModel(BertConfig(vocab_size=12, hidden_size=8, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(tmp_path)
    model, tokenizer = build_model(ModelConfig(name_or_path=str(tmp_path), pooling="mean", freeze_layers=2,
                                               dropout=0.0), load_taxonomy(), [], 16)
    texts = ["氢能", "芯片卫星材料氢", "卫星", "材料芯片"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = torch.tensor([[1.0, 0, 0, 0, 0, 0]] * 4)
    model.train()

    def step():
        model.zero_grad()
        out = model(**batch, labels=labels)
        out.loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        return out.logits.detach(), grads

    full_logits, full_grads = step()
    cache = FrozenLayersCache(model, 2, tokenizer.pad_token_id, tokenizer.padding_side)
    cache.fill(tokenizer(texts)["input_ids"], batch_size=3)
    assert len(cache.states) == 4 and model.training  # fill leaves the training mode as it found it
    with cache.active():
        cached_logits, cached_grads = step()
        with pytest.raises(RuntimeError, match="not in the frozen-layer cache"):
            model(**tokenizer(["氢氢氢"], return_tensors="pt"))
    torch.testing.assert_close(cached_logits, full_logits, atol=1e-5, rtol=1e-5)
    for cached, full in zip(cached_grads, full_grads):
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    # Outside the block the model is whole again: unseen text runs through every layer.
    assert "forward" not in model.bert.embeddings.__dict__
    model(**tokenizer(["氢氢氢"], return_tensors="pt"))
    on, _ = build_model(ModelConfig(name_or_path=str(tmp_path), pooling="mean", freeze_layers=2, dropout=None),
                        load_taxonomy(), [], 16)
    assert "dropout is on" in cache_unavailable_reason(on, 2) and cache_unavailable_reason(model, 2) is None


def test_training_logs_each_epoch_as_one_line_and_prints_no_trainer_dicts(tmp_path) -> None:
    sets = [x for item in [*TINY, "train.epochs=2", f"output_dir={tmp_path}/run"] for x in ("--set", item)]
    result = run_cli("--config", "configs/offline-small.yaml", *sets)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "{'loss'" not in result.stdout + result.stderr and "{'eval_" not in result.stdout + result.stderr
    epochs = [line for line in result.stderr.splitlines() if " INFO training: epoch " in line]
    assert any("loss " in line for line in epochs) and any("eval_macro_ap " in line for line in epochs), epochs
    # No terminal here: no progress bars redrawn into the output.
    assert "training steps:" not in result.stderr and "\r" not in result.stderr


def test_cv_folds_share_one_frozen_layer_pass_over_each_unit(tmp_path, monkeypatch) -> None:
    """Every fold loads the same pretrained encoder: a unit's frozen states are computed in one fold only,
    and the folds score exactly as with a cache of their own."""
    from transformers import BertConfig, BertModel, BertTokenizer

    from training import train
    from training.frozen_cache import FrozenLayersCache

    texts = [json.loads(line)["text"] for line in open("labels/seed_units.jsonl", encoding="utf-8")]
    chars = sorted({ch for text in texts for ch in "query: " + text})
    BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                     *chars])}).save_pretrained(tmp_path / "enc")
    BertModel(BertConfig(vocab_size=len(chars) + 4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "enc")
    computed: list[int] = []
    fill = FrozenLayersCache.fill

    def counting_fill(self, sequences, **kwargs):
        before = len(self.states)
        seconds = fill(self, sequences, **kwargs)
        computed.append(len(self.states) - before)
        return seconds

    monkeypatch.setattr(FrozenLayersCache, "fill", counting_fill)
    sets = [f"output_dir={tmp_path}/cv", f"model.name_or_path={tmp_path}/enc", "model.pooling=mean",
            "model.freeze_layers=1", "model.dropout=0", "model.tfidf_fusion=false", "train.epochs=1",
            "train.batch_size=32", "train.precision=fp32", "data.max_length=64",
            "data.label_files=[labels/seed_units.jsonl]"]
    args = ["--config", "configs/offline-small.yaml", "--quiet", "--cv", "2", "--no-real-only"]
    assert train.main([*args, *[x for item in sets for x in ("--set", item)]]) == 0
    shared = json.loads((tmp_path / "cv-cv2" / "metrics.json").read_text())
    distinct = len({tuple(ids) for ids in BertTokenizer.from_pretrained(tmp_path / "enc")(
        ["query: " + t for t in texts], truncation=True, max_length=64)["input_ids"]})
    assert len(computed) == 2 and computed[1] > 0 and sum(computed) == distinct

    # The same folds with a store of its own per fold score the same.
    monkeypatch.setattr(train, "SCRATCH", f"{tmp_path}/enc")  # treated like a scratch model: nothing shared
    computed.clear()
    assert train.main([*args, *[x for item in [*sets, f"output_dir={tmp_path}/own"] for x in ("--set", item)]]) == 0
    own = json.loads((tmp_path / "own-cv2" / "metrics.json").read_text())
    assert sum(computed) > distinct
    # Seed units only: the one arm is "real only".
    assert [f["model"]["macro_f1"] for f in own["folds"]["real only"]] == \
        [f["model"]["macro_f1"] for f in shared["folds"]["real only"]]


def test_artifact_and_report_say_which_page_was_held_out_and_how_thresholds_were_set(tiny_artifact) -> None:
    meta = json.loads((tiny_artifact / "artifact.json").read_text())
    assert meta["threshold_rule"] == "global" and "1 whole page (" in meta["test_split"]
    thresholds = json.loads((tiny_artifact / "thresholds.json").read_text())
    assert len(set(thresholds.values())) == 1  # one shared threshold
    report = (tiny_artifact / "report.md").read_text()
    assert meta["test_split"] in report and "train.threshold_rule: global" in report
    assert "95% interval" in report
