"""Train the future-industry classifier and write a self-describing artifact.

    python -m training.train --config configs/offline-small.yaml
    python -m training.train --config configs/offline-small.yaml --cv 5
    python -m training.train --config configs/bert-base-chinese.yaml --set train.epochs=3

A single run holds out whole pages of the real (crawled, hand-labelled) units as
the test set (`data.split_by`), trains on the rest plus any authored units, sets
the thresholds on validation (`train.threshold_rule`), and writes model,
tokenizer, labels, thresholds, config, metrics and report.md into the output
folder. `--cv K` instead runs K folds of whole pages and reports mean ± std for
the model and the baselines, with and without the authored units, and how each
threshold rule would have scored with and without the TF-IDF half.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from runtime.artifact import ARTIFACT_FILE, CALIBRATION_FILE
from runtime.classifier import Classifier
from runtime.decide import decide, label_matrix
from runtime.fingerprint import clear_derived
from runtime.logs import setup_logging
from runtime.taxonomy import Taxonomy, load_taxonomy
from runtime.text import PREPROCESSING_VERSION
from training.config import Config, ConfigError, load_config
from training.data import (
    Example,
    Splits,
    kfold_indices,
    label_counts,
    load_examples,
    make_splits,
    multi_hot,
    split_description,
    to_dataset,
)
from training.evaluate import (
    ENCODER,
    FROZEN,
    FUSION,
    MODEL,
    RULES,
    TFIDF,
    FrozenFeatureBaseline,
    TfidfBaseline,
    bootstrap_macro_f1,
    choose_thresholds,
    cooccurrence,
    cue_rules,
    decision_table,
    macro_average_precision,
    metrics,
    plot_cooccurrence,
)
from training.files import readable_like_other_files
from training.model import SCRATCH, FrozenEncoder, build_model
from training.precision_probe import (
    ONLY_CANDIDATE,
    PrecisionChoice,
    agreed_across_ranks,
    measure_training_precision,
    training_candidates,
    typical_batch,
)
from training.reports import cv_report, single_report

log = logging.getLogger("training")

AUTHORED = "authored"


# Precisions `auto` measured in this process, by model config, batch size, length and candidates:
# the folds of --cv train the same model in the same batches, so the first fold's measurement holds.
_MEASURED: dict[tuple, PrecisionChoice] = {}


def choose_precision(cfg: Config, model, tokenizer, train_ds) -> PrecisionChoice:
    """train.precision as given, or for `auto` the fastest candidate in a few timed training steps of
    `model` on a typical batch of `train_ds` (training/precision_probe.py); the model is left unchanged."""
    import torch
    from transformers import DataCollatorWithPadding

    from training.frozen_cache import FrozenLayersCache, cache_unavailable_reason

    if cfg.train.precision != "auto":
        return PrecisionChoice(cfg.train.precision, "set by train.precision")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    candidates = training_candidates(device)
    if len(candidates) == 1:
        log.info("precision auto: %s, %s", candidates[0], ONLY_CANDIDATE)
        return PrecisionChoice(candidates[0], ONLY_CANDIDATE)
    key = (repr(cfg.model), cfg.train.batch_size, cfg.data.max_length, device, tuple(candidates))
    if key in _MEASURED:
        return _MEASURED[key]
    rows = [train_ds[i] for i in typical_batch(train_ds, cfg.train.batch_size)]
    batch = {k: v.to(device) for k, v in DataCollatorWithPadding(tokenizer)(rows).items()}
    model.to(device)
    # With the frozen-layer cache each step runs only the layers that learn: time those steps, with
    # a cache of this batch's units alone (filled in fp32 and thrown away; the real one is filled later).
    cache = None
    if cfg.model.freeze_layers and cfg.train.cache_frozen_layers and \
            cache_unavailable_reason(model, cfg.model.freeze_layers) is None:
        cache = FrozenLayersCache(model, cfg.model.freeze_layers, tokenizer.pad_token_id, tokenizer.padding_side)
        cache.fill([row["input_ids"] for row in rows])
    with cache.active() if cache is not None else contextlib.nullcontext():
        choice = measure_training_precision(model, batch, candidates)
    if choice.timings:
        choice = agreed_across_ranks(choice)
    log.info("%s", choice.describe())
    _MEASURED[key] = choice
    return choice


def _training_only_progress():
    from transformers.trainer_callback import ProgressCallback

    class TrainingOnlyProgress(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            super().on_train_begin(args, state, control, **kwargs)
            if getattr(self, "training_bar", None) is not None:
                self.training_bar.set_description("training steps")

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
            pass

        def on_log(self, args, state, control, logs=None, **kwargs):
            pass  # the stock callback prints each log dict to stdout; trainer_log_lines logs it instead

    return ProgressCallback, TrainingOnlyProgress


def trainer_log_lines():
    """Trainer callback: each per-epoch log dict (loss, validation metrics) as one line of our log."""
    from transformers import TrainerCallback

    class TrainerLogLines(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                log.info("epoch %g: %s", round(state.epoch or 0, 2), format_trainer_logs(logs))

    return TrainerLogLines()


def format_trainer_logs(logs: dict) -> str:
    """The Trainer's per-epoch log dict as one readable line ("loss 0.2169, eval_macro_ap 0.912, …")."""
    skip = {"epoch", "total_flos"}
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items() if k not in skip)


def in_order_eval_trainer():
    """Trainer that reads the validation set in dataset order on one process.

    transformers 5 applies `train_sampling_strategy="group_by_length"` to evaluation too. Its
    megabatches hold min(n / (4 x batch), 50) batches: one for our 429 validation units in batches
    of 64, so evaluation got random batches, each padded to its longest unit. Our validation set
    is sorted by length already, so reading it in order pads least.
    """
    from torch.utils.data import SequentialSampler
    from transformers import Trainer
    from transformers.trainer_utils import has_length

    class InOrderEvalTrainer(Trainer):
        def _get_eval_sampler(self, eval_dataset):
            if self.args.world_size <= 1 and eval_dataset is not None and has_length(eval_dataset):
                return SequentialSampler(eval_dataset)
            return super()._get_eval_sampler(eval_dataset)

    return InOrderEvalTrainer


def make_optimizer(model, cfg: Config, fused: bool | None = None):
    """AdamW with two learning rates: the pretrained body's and the new head's (classifier, pooled-vector norm, pooler).

    No weight decay on biases and LayerNorm weights, as in Trainer's own optimizer; frozen
    parameters are left out so they cost no optimizer state.
    """
    import torch

    head_lr = cfg.train.head_learning_rate or cfg.train.learning_rate
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name.startswith(("classifier.", "pooled_norm.", "bert.pooler.", "pooler."))
        no_decay = param.ndim < 2 or "LayerNorm" in name or name.endswith(".bias")
        groups.setdefault((is_head, no_decay), []).append(param)
    params = [{"params": ps, "lr": head_lr if is_head else cfg.train.learning_rate,
               "weight_decay": 0.0 if no_decay else cfg.train.weight_decay}
              for (is_head, no_decay), ps in sorted(groups.items())]
    return torch.optim.AdamW(params, lr=cfg.train.learning_rate, fused=fused)


def weighted_bce(pos_weight: float):
    """Trainer loss hook: BCE-with-logits whose positive term is weighted by `pos_weight`."""
    import torch

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        weight = torch.full((logits.shape[-1],), pos_weight, dtype=logits.dtype, device=logits.device)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), pos_weight=weight)

    return loss


@dataclass
class FitResult:
    classifier: Classifier
    epochs_run: float
    best_val_macro_ap: float
    train_seconds: float
    # The encoder's probabilities on the validation split (without the TF-IDF half): its thresholds, or the
    # fused model's with the TF-IDF half's probabilities averaged in, were tuned on them.
    val_probs: np.ndarray
    # Spent before the first step computing the frozen layers' output once per unit (0 without the cache).
    frozen_cache_seconds: float = 0.0
    # The training precision and, for train.precision auto, the seconds per step it measured.
    precision_choice: PrecisionChoice | None = None


def is_main_process() -> bool:
    """False on every torchrun rank but 0 (RANK is unset outside torchrun)."""
    return int(os.environ.get("RANK", "0")) == 0


def rank_samples_callback():
    """Trainer callback: logs how many training samples this process was fed (under torchrun, its shard)."""
    from transformers import TrainerCallback

    class RankSamples(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            loader = getattr(train_dataloader, "base_dataloader", train_dataloader)  # accelerate wraps it
            self.seen, collate = 0, loader.collate_fn

            def counting(features):
                self.seen += len(features)
                return collate(features)

            loader.collate_fn = counting

        def on_train_end(self, args, state, control, **kwargs):
            if args.world_size > 1:
                log.info("rank %d of %d: %d training samples in %g epochs", args.process_index, args.world_size,
                         self.seen, state.epoch or 0)
            else:
                log.info("trained on %d samples in %g epochs", self.seen, state.epoch or 0)

    return RankSamples()


def frozen_layers_cache(cfg: Config, model, tokenizer, datasets: list, precision: str, progress: bool,
                        shared: dict | None = None):
    """The frozen layers' outputs for every unit of `datasets`, or None when they cannot or should not be cached.

    `shared` (precision -> states) carries states between models whose frozen layers and tokenizer are the
    same pretrained ones, as in the folds of one --cv run: each unit is then computed once per run.
    """
    from training.frozen_cache import MAX_CACHE_BYTES, FrozenLayersCache, cache_unavailable_reason

    if not cfg.model.freeze_layers or not cfg.train.cache_frozen_layers:
        return None
    reason = cache_unavailable_reason(model, cfg.model.freeze_layers)
    sequences = [ids for ds in datasets for ids in ds["input_ids"]]
    size = sum(len(ids) for ids in sequences) * model.config.hidden_size * 4
    if reason is None and size > MAX_CACHE_BYTES:
        reason = f"their outputs would take {size / 2**30:.1f} GiB (limit {MAX_CACHE_BYTES / 2**30:.0f} GiB)"
    if reason:
        log.info("frozen layers run in every step: %s", reason)
        return None
    cache = FrozenLayersCache(model, cfg.model.freeze_layers, tokenizer.pad_token_id, tokenizer.padding_side,
                              states=None if shared is None else shared.setdefault(precision, {}))
    known = len(cache.states)
    seconds = cache.fill(sequences, batch_size=cfg.train.eval_batch_size, bf16=precision == "bf16", progress=progress)
    reused = f", {known} kept from earlier folds" if known else ""
    log.info("frozen layers computed once for %d distinct units (%.0f MB) in %.0f s%s: each step runs the top %d "
             "layers only (train.cache_frozen_layers)", len(cache.states) - known, cache.nbytes / 2**20, seconds,
             reused, len(cache.layers) - cfg.model.freeze_layers)
    return cache


def fit(cfg: Config, splits: Splits, taxonomy: Taxonomy, workdir: Path, progress: bool = True,
        frozen_states: dict | None = None) -> FitResult:
    """Train one model on splits.train, early-stop and tune thresholds on splits.val.

    `frozen_states`: the frozen-layer states of earlier fits with the same pretrained encoder (see
    `frozen_layers_cache`), read and extended."""
    import torch
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback

    ProgressCallback, TrainingOnlyProgress = _training_only_progress()

    set_seed(cfg.seed)
    model, tokenizer = build_model(cfg.model, taxonomy, [ex.text for ex in splits.train], cfg.data.max_length)
    prefix = cfg.model.text_prefix
    train_ds = to_dataset(splits.train, taxonomy, tokenizer, cfg.data.max_length, prefix)
    # Evaluated in dataset order (in_order_eval_trainer); sorted by length, its batches carry
    # little padding. The metrics ignore order.
    val_ds = to_dataset(sorted(splits.val, key=lambda ex: len(ex.text)), taxonomy, tokenizer, cfg.data.max_length,
                        prefix)
    precision_choice = choose_precision(cfg, model, tokenizer, train_ds)
    precision = precision_choice.precision
    directions = list(taxonomy.directions)

    def compute_metrics(eval_pred) -> dict:
        logits, labels = eval_pred
        probs = 1 / (1 + np.exp(-logits))
        # Checkpoints are chosen on macro average precision, which needs no threshold: F1 at a fixed
        # 0.5 reads "predict nothing" for every epoch in which a pretrained model's probabilities are
        # still rising towards 0.5, and early stopping then ends a run that is learning well.
        return {"macro_ap": macro_average_precision(labels, probs),
                "macro_f1_at_0.5": metrics(labels, (probs >= 0.5).astype(int), taxonomy)["macro_f1"]}

    args = TrainingArguments(
        output_dir=str(workdir),
        num_train_epochs=cfg.train.epochs,
        per_device_train_batch_size=cfg.train.batch_size,
        per_device_eval_batch_size=cfg.train.eval_batch_size,
        learning_rate=cfg.train.learning_rate,
        weight_decay=cfg.train.weight_decay,
        warmup_steps=cfg.train.warmup,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model="macro_ap",
        greater_is_better=True,
        logging_strategy="epoch",
        # Batches of similar length waste little on padding.
        train_sampling_strategy="group_by_length",
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=not progress,
    )
    trainer = in_order_eval_trainer()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience),
                   rank_samples_callback()],
        optimizers=(make_optimizer(model, cfg), None),
        compute_loss_func=weighted_bce(cfg.train.pos_weight) if cfg.train.pos_weight != 1 else None,
    )
    # One bar for training; the per-epoch evaluation bar only adds noise between epochs. The stock callbacks
    # print log dicts to stdout (PrinterCallback without a bar); they go to our log as lines instead.
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(trainer_log_lines())
    if not args.disable_tqdm:
        trainer.add_callback(TrainingOnlyProgress())
    log.info("training on %s with %s precision", "GPU" if torch.cuda.is_available() else "CPU", precision)
    started = time.perf_counter()
    cache = frozen_layers_cache(cfg, trainer.model, tokenizer, [train_ds, val_ds], precision, progress, frozen_states)
    cache_seconds = time.perf_counter() - started
    with cache.active() if cache is not None else contextlib.nullcontext():
        trainer.train()
    seconds = time.perf_counter() - started - cache_seconds
    best = trainer.state.best_metric if trainer.state.best_metric is not None else float("nan")
    model = trainer.model.to(torch.float32)
    shutil.rmtree(workdir, ignore_errors=True)

    classifier = Classifier(model, tokenizer, directions, [0.5] * len(directions), taxonomy.other,
                            cfg.data.max_length, batch_size=cfg.train.eval_batch_size, text_prefix=prefix)
    val_texts = [ex.text for ex in splits.val]
    val_probs = classifier.probabilities(val_texts)
    if cfg.model.tfidf_fusion:
        from runtime.lexical import LexicalModel

        classifier.lexical = LexicalModel.fit([ex.text for ex in splits.train], multi_hot(splits.train, taxonomy),
                                              seed=cfg.seed)
        log.info("model.tfidf_fusion: TF-IDF model trained; thresholds are tuned on the mean of both")
    rule = cfg.train.threshold_rule
    classifier.thresholds = choose_thresholds(rule, multi_hot(splits.val, taxonomy),
                                              classifier.fuse(val_probs, val_texts))
    log.info("thresholds (train.threshold_rule %s): %s", rule,
             ", ".join(f"{d}={t:.2f}" for d, t in zip(directions, classifier.thresholds)))
    return FitResult(classifier, float(trainer.state.epoch or 0), float(best), seconds, val_probs,
                     cache_seconds if cache is not None else 0.0, precision_choice)


def frozen_encoder(cfg: Config, precision: str | None = None) -> FrozenEncoder | None:
    """The pretrained encoder for the frozen-feature baseline; None for from-scratch models (nothing pretrained).

    `precision`: the one training chose (measured, for auto). Without it, train.precision `auto`
    means fp32: bf16 only where a measurement found it faster, never from the device alone.
    """
    if cfg.model.name_or_path == SCRATCH:
        return None
    precision = precision or (cfg.train.precision if cfg.train.precision != "auto" else "fp32")
    return FrozenEncoder(cfg.model, cfg.data.max_length, bf16=precision == "bf16",
                         batch_size=cfg.train.eval_batch_size)


@dataclass
class Scored:
    """One split's results: metrics and predicted label matrices per system, and the probabilities kept for
    re-deciding the threshold rule and fusion afterwards (`decision_table`)."""

    results: dict
    preds: dict
    probs: dict[str, np.ndarray]


def score_all(fitted: FitResult | None, splits: Splits, taxonomy: Taxonomy, seed: int,
              encoder: FrozenEncoder | None = None, threshold_rule: str = "validation") -> Scored:
    """Test-set metrics for the model (unless None) and the baselines; also their predicted label matrices.

    The `encoder alone` / `model+tfidf mean` comparison rows set their thresholds by the model's rule.
    """
    texts = [ex.text for ex in splits.test]
    val_texts = [ex.text for ex in splits.val]
    y_true = multi_hot(splits.test, taxonomy)
    y_val = multi_hot(splits.val, taxonomy)
    preds = {}
    # The fused model's TF-IDF half is this baseline's model (same units, same seed): fitted once.
    tfidf = TfidfBaseline(seed=seed).fit(splits.train, splits.val, taxonomy,
                                         trained=fitted.classifier.lexical if fitted is not None else None)
    probs = {"y_test": y_true, "y_val": y_val, "tfidf_test": tfidf.probabilities(texts),
             "tfidf_val": tfidf.probabilities(val_texts)}
    if fitted is not None:
        clf = fitted.classifier
        enc = clf.probabilities(texts, fused=False)
        probs.update(encoder_test=enc, encoder_val=fitted.val_probs)
        preds[MODEL] = label_matrix(decide(clf.fuse(enc, texts), clf.directions, clf.thresholds, clf.other),
                                    clf.directions)
        if clf.lexical is not None:
            thresholds = np.asarray(choose_thresholds(threshold_rule, y_val, fitted.val_probs))
            preds[ENCODER] = (enc >= thresholds).astype(np.float32)
        else:
            val_fused = (fitted.val_probs + probs["tfidf_val"]) / 2
            thresholds = np.asarray(choose_thresholds(threshold_rule, y_val, val_fused))
            preds[FUSION] = (((enc + probs["tfidf_test"]) / 2) >= thresholds).astype(np.float32)
    preds[TFIDF] = tfidf.predict(texts)
    preds[RULES] = cue_rules(texts, taxonomy)
    if encoder is not None:
        preds[FROZEN] = FrozenFeatureBaseline(encoder, seed=seed).fit(splits.train, splits.val, taxonomy).predict(texts)
    return Scored({name: metrics(y_true, y, taxonomy) for name, y in preds.items()}, preds, probs)


def split_real_authored(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    real = [ex for ex in examples if ex.source != AUTHORED]
    authored = [ex for ex in examples if ex.source == AUTHORED]
    if len(real) < 20:
        raise ConfigError(
            f"only {len(real)} real (non-authored) labelled units: the test set is made of real crawled units only, "
            "so add labelled crawls (labels/*.jsonl) before training"
        )
    return real, authored


def log_data(examples: list[Example], taxonomy: Taxonomy) -> None:
    counts = label_counts(examples)
    sources = Counter(ex.source for ex in examples)
    log.info("%d labelled units (%s)", len(examples), ", ".join(f"{s}: {n}" for s, n in sources.items()))
    log.info("units per label: %s", ", ".join(f"{label}={counts.get(label, 0)}" for label in taxonomy.all_labels))
    for ex in examples[:: max(1, len(examples) // 3)][:3]:
        log.info("example: %s -> %s", ex.text[:60], list(ex.labels))


def write_artifact(out: Path, cfg: Config, taxonomy: Taxonomy, fitted: FitResult, splits: Splits,
                   results: dict, preds: dict, precision: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # ONNX graphs and precision.json left by serving.batch or serving.package belong to the weights
    # this run replaces; a loader would otherwise run the old graph (or crash on the new tokenizer).
    removed = clear_derived(out)
    if removed:
        log.info("removed %s from %s: derived from the weights this run replaces", ", ".join(removed), out)
    clf = fitted.classifier
    clf.model.save_pretrained(out)
    clf.tokenizer.save_pretrained(out)
    if clf.lexical is not None:
        clf.lexical.save(out)
    y_true = multi_hot(splits.test, taxonomy)
    plot_cooccurrence(cooccurrence(y_true, preds[MODEL]), taxonomy, out / "cooccurrence.png",
                      f"{cfg.name}: true vs predicted labels on {len(splits.test)} held-out real units")
    headline = {k: results[MODEL][k]
                for k in ("micro_f1", "macro_f1", "macro_f1_ci", "macro_f1_directions", "exact_match")
                if k in results[MODEL]}
    meta = {
        "name": cfg.name,
        "directions": list(taxonomy.directions),
        "other": taxonomy.other,
        "labels": taxonomy.all_labels,
        "thresholds": clf.thresholds,
        "threshold_rule": cfg.train.threshold_rule,
        "test_split": split_description(splits.test, cfg.data.split_by),
        "max_length": cfg.data.max_length,
        "preprocessing_version": PREPROCESSING_VERSION,
        "base_model": cfg.model.name_or_path,
        "pooling": cfg.model.pooling,
        "text_prefix": cfg.model.text_prefix,
        "tfidf_fusion": clf.lexical is not None,
        "from_scratch": cfg.model.name_or_path == SCRATCH,
        "precision": precision,
        # What train.precision auto timed (seconds per training step by candidate; empty when the
        # precision was given or there was one candidate) and why it chose.
        "precision_timings": dict(fitted.precision_choice.timings) if fitted.precision_choice else {},
        "precision_reason": fitted.precision_choice.reason if fitted.precision_choice else "",
        "metrics": headline,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # Held-out units let precision=auto check a faster variant against fp32 at load time.
    (out / CALIBRATION_FILE).write_text("\n".join(ex.text for ex in splits.val[:256]) + "\n", encoding="utf-8")
    (out / ARTIFACT_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    (out / "labels.json").write_text(json.dumps({"directions": meta["directions"], "other": taxonomy.other,
                                                  "names": taxonomy.names}, ensure_ascii=False, indent=2),
                                     encoding="utf-8")
    (out / "thresholds.json").write_text(json.dumps(dict(zip(taxonomy.directions, clf.thresholds)), indent=2),
                                         encoding="utf-8")
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), allow_unicode=True, sort_keys=False),
                                     encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps({"test": results, "best_val_macro_ap": fitted.best_val_macro_ap,
                                                  "epochs_run": fitted.epochs_run}, indent=2), encoding="utf-8")
    (out / "report.md").write_text(single_report(cfg, taxonomy, fitted, splits, results, precision), encoding="utf-8")
    readable_like_other_files(out)


def run_single(cfg: Config, progress: bool = True, frozen_baseline: bool = False) -> Path:
    taxonomy = load_taxonomy(cfg.data.taxonomy)
    examples = load_examples(cfg.data.label_files, taxonomy)
    log_data(examples, taxonomy)
    real, authored = split_real_authored(examples)
    splits = make_splits(real, authored, taxonomy, None, cfg.data.val_fraction, cfg.data.test_fraction,
                         cfg.data.authored_val_fraction, cfg.seed, cfg.data.split_by)
    log.info("splits (test: %s):\n%s", split_description(splits.test, cfg.data.split_by), splits.describe(taxonomy))
    out = cfg.resolved_output_dir
    fitted = fit(cfg, splits, taxonomy, out / "checkpoints", progress)
    if not is_main_process():  # torchrun: every rank trained its shard; rank 0 writes the one artifact
        return out
    # The frozen-feature baseline costs one more pass of the encoder over every training unit
    # (over a minute for e5 on 2 cores); --cv always reports it, a single run only when asked.
    scored = score_all(fitted, splits, taxonomy, cfg.seed,
                       frozen_encoder(cfg, fitted.precision_choice.precision) if frozen_baseline else None,
                       cfg.train.threshold_rule)
    results, preds = scored.results, scored.preds
    y_test = multi_hot(splits.test, taxonomy)
    for name, result in results.items():
        result["macro_f1_ci"] = list(bootstrap_macro_f1(y_test, preds[name], seed=cfg.seed))
    write_artifact(out, cfg, taxonomy, fitted, splits, results, preds, fitted.precision_choice.precision)
    log.info("test macro F1: %s", ", ".join(f"{name} {r['macro_f1']:.3f}" for name, r in results.items()))
    log.info("artifact written to %s (report: %s)", out, out / "report.md")
    return out


def run_cv(cfg: Config, k: int, real_only_arm: bool = True, baselines_only: bool = False,
           progress: bool = True) -> Path:
    """K folds over the real units; each arm trains on the other folds (plus authored units in the first arm)."""
    taxonomy = load_taxonomy(cfg.data.taxonomy)
    examples = load_examples(cfg.data.label_files, taxonomy)
    log_data(examples, taxonomy)
    real, authored = split_real_authored(examples)
    folds = kfold_indices(real, taxonomy, k, cfg.seed, by=cfg.data.split_by)
    arms = {"real + authored": authored, "real only": []} if authored else {"real only": []}
    if authored and not real_only_arm:
        del arms["real only"]
    encoder = frozen_encoder(cfg)
    # Every fold loads the same pretrained weights and tokenizer, so a unit's frozen-layer states are the
    # same in every fold: computed once per run. A scratch model's vocabulary and weights differ per fold.
    frozen_states: dict | None = {} if cfg.model.name_or_path != SCRATCH else None
    out = Path(f"{cfg.resolved_output_dir}-cv{k}")
    out.mkdir(parents=True, exist_ok=True)
    fold_results: dict[str, list[dict]] = {arm: [] for arm in arms}
    fold_probs: dict[str, list[dict]] = {arm: [] for arm in arms}
    pooled = {arm: [np.zeros((0, len(taxonomy.directions)))] * 2 for arm in arms}
    for arm, extra in arms.items():
        for i, test_idx in enumerate(folds):
            splits = make_splits(real, extra, taxonomy, test_idx, cfg.data.val_fraction, 1 / len(folds),
                                 cfg.data.authored_val_fraction, cfg.seed + i)
            log.info("[%s] fold %d/%d: %d test units, %s", arm, i + 1, len(folds), len(test_idx),
                     split_description(splits.test, cfg.data.split_by))
            fitted = (None if baselines_only
                      else fit(cfg, splits, taxonomy, out / "checkpoints", progress, frozen_states))
            scored = score_all(fitted, splits, taxonomy, cfg.seed + i, encoder, cfg.train.threshold_rule)
            fold_results[arm].append(scored.results)
            fold_probs[arm].append(scored.probs)
            # Written after every fold so an interrupted CV keeps what it measured.
            (out / "metrics.json").write_text(json.dumps({"k": len(folds), "split_by": cfg.data.split_by,
                                                          "folds": fold_results}, indent=2), encoding="utf-8")
            pooled[arm] = [np.vstack([pooled[arm][0], multi_hot(splits.test, taxonomy)]),
                           np.vstack([pooled[arm][1], scored.preds[MODEL if MODEL in scored.preds else TFIDF]])]
            log.info("[%s] fold %d macro F1: %s", arm, i + 1,
                     ", ".join(f"{name} {r['macro_f1']:.3f}" for name, r in scored.results.items()))
    main_arm = next(iter(arms))
    decision = None
    if not baselines_only:
        decision = decision_table(fold_probs[main_arm], taxonomy)
        # Every fold's probabilities, so the threshold rule and fusion can be re-decided without retraining.
        np.savez_compressed(out / "probabilities.npz", **{f"fold{i}_{key}": value
                                                          for i, fold in enumerate(fold_probs[main_arm])
                                                          for key, value in fold.items()})
    plot_cooccurrence(cooccurrence(*pooled[main_arm]), taxonomy, out / "cooccurrence.png",
                      f"{cfg.name}, {len(folds)}-fold CV ({main_arm}): all held-out real units")
    (out / "metrics.json").write_text(json.dumps({"k": len(folds), "split_by": cfg.data.split_by,
                                                  "folds": fold_results, "decision": decision}, indent=2),
                                      encoding="utf-8")
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), allow_unicode=True, sort_keys=False),
                                     encoding="utf-8")
    (out / "report.md").write_text(cv_report(cfg, taxonomy, k, real, authored, fold_results, folds, decision),
                                   encoding="utf-8")
    log.info("cross-validation report written to %s", out / "report.md")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Fine-tune a BERT multi-label classifier for the six future-industry directions and write an "
                    "artifact folder (model, tokenizer, labels, thresholds, config, metrics, report.md).",
        epilog="Examples:\n  python -m training.train --config configs/offline-e5-small.yaml\n"
               "  python -m training.train --config configs/offline-e5-small.yaml --cv 5 --no-real-only\n"
               "  python -m training.train --config configs/offline-small.yaml   (small, from scratch, fast)\n"
               "  python -m training.train --config configs/bert-base-chinese.yaml "
               "--set model.name_or_path=models/bert-base-chinese --set train.epochs=3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="YAML config file (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. train.epochs=3 or model.name_or_path=PATH (repeatable)")
    parser.add_argument("--cv", type=int, default=0, metavar="K",
                        help="run K-fold cross-validation on the real units instead of one train/test run; folds hold "
                             "whole pages (data.split_by), one page per fold when there are K pages or fewer")
    parser.add_argument("--no-real-only", action="store_true",
                        help="with --cv: skip the second arm that trains on real units only (halves the time)")
    parser.add_argument("--baselines-only", action="store_true",
                        help="with --cv: score only the baselines (TF-IDF, cue rules, frozen encoder) on the same "
                             "folds, in minutes, without fine-tuning")
    parser.add_argument("--frozen-baseline", action="store_true",
                        help="one train/test run: also score logistic regression on the frozen pretrained encoder "
                             "(one more encoder pass over the training units; --cv always does)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)
    try:
        import datasets
        import transformers

        transformers.logging.set_verbosity_warning()
        # Loading and saving weights draw a bar per shard every epoch; the training bar says enough.
        transformers.utils.logging.disable_progress_bar()
        # Bars redrawn into a log file or CI output become a wall of lines; without a terminal the log's
        # per-epoch lines say the same.
        progress = not (args.quiet or args.no_progress) and sys.stderr.isatty()
        if not progress:
            datasets.disable_progress_bars()

        cfg = load_config(args.config, args.overrides)
        if args.cv and args.cv < 2:
            raise ConfigError("--cv needs K >= 2 folds")
        if args.baselines_only and not args.cv:
            raise ConfigError("--baselines-only goes with --cv K")
        if args.cv:
            run_cv(cfg, args.cv, real_only_arm=not args.no_real_only, baselines_only=args.baselines_only,
                   progress=progress)
        else:
            run_single(cfg, progress, frozen_baseline=args.frozen_baseline)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no artifact was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
