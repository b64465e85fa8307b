"""Scoring: cleaned units -> direction probabilities -> label sets.

The one prediction path. Training evaluation, the HTTP service and the batch
scorer all call `Classifier`, so thresholds and the `other` rule are applied the
same way everywhere.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from training.fingerprint import weights_fingerprint
from training.text import PREPROCESSING_VERSION, clean

log = logging.getLogger(__name__)

ARTIFACT_FILE = "artifact.json"
CALIBRATION_FILE = "calibration.txt"  # held-out cleaned units, one per line, for precision=auto
# onnx / onnx-int8: ONNX Runtime on the exported graph, fp32 or int8 weights (training/onnx_runtime.py).
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "onnx", "onnx-int8", "auto")
# precision=auto accepts a faster variant only if it gives the same label set as fp32 on
# at least this share of the calibration units.
AUTO_MIN_AGREEMENT = 0.99
# ... and only if it is at least this much faster than the best so far: a variant that merely
# ties fp32 on the calibration units (timing noise) is not worth a second copy of the model.
AUTO_MIN_SPEEDUP = 1.05
# The precision decided once for a model (by `python -m serving.package` or the first
# precision=auto load) and read by every later load, so the same model gives the same scores.
PRECISION_FILE = "precision.json"
# The field of precision.json naming the weights the choice was made for (training/fingerprint.py):
# a choice timed and checked for agreement on other weights says nothing about these.
WEIGHTS_FIELD = "weights_fingerprint"
# Characters of one unit handed to the tokenizer: far beyond max_length tokens for any tokenizer
# we use, so a longer unit is certainly cut, and tokenising a 50 MB line costs no more than this.
MAX_CHARS_PER_TOKEN = 16


def recorded_precision(path: str | Path, fingerprint: str | None = None) -> dict | None:
    """The precision recorded in a model folder ({"precision": ..., ...}), or None: none recorded, or
    recorded for other weights than `fingerprint` (default: those in the folder)."""
    file = Path(path) / PRECISION_FILE
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if not (isinstance(record, dict) and record.get("precision") in PRECISIONS[:-1]):
        return None
    try:
        expected = fingerprint or weights_fingerprint(path)
    except FileNotFoundError:  # no weights beside it: nothing the record could be about
        return None
    if record.get(WEIGHTS_FIELD) != expected:
        log.info("%s was decided for %s, not the weights beside it (e.g. before a retrain into the same folder); "
                 "ignoring it", file, "other weights" if record.get(WEIGHTS_FIELD) else "unnamed weights")
        return None
    return record


def record_precision(path: str | Path, record: dict, fingerprint: str | None = None) -> bool:
    """Write the decided precision into a model folder, bound to the weights `fingerprint` names
    (default: those in the folder); False if the folder is not writable."""
    file = Path(path) / PRECISION_FILE
    record = {**record, WEIGHTS_FIELD: fingerprint or weights_fingerprint(path)}
    try:
        tmp = file.with_name(file.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        tmp.replace(file)
    except OSError as exc:
        log.warning("could not record the precision in %s (%s)", file, exc)
        return False
    return True


class ArtifactError(ValueError):
    """A folder that is not a usable training artifact; the message says what to do."""


def read_artifact_meta(path: Path, need_weights: bool = True) -> dict:
    """artifact.json of a training artifact, checked against this code's preprocessing version (and, unless
    `need_weights` is False, for the model weights a Classifier will load)."""
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a folder; pass the output folder of python -m training.train")
    meta_path = path / ARTIFACT_FILE
    if not meta_path.is_file():
        raise ArtifactError(f"{path} has no {ARTIFACT_FILE}: it is not a training artifact "
                            "(train one with python -m training.train)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    # transformers would fail later with a traceback; a folder copied without its weights is the usual cause.
    if need_weights and not any(path.glob("model*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        raise ArtifactError(f"{path} has {ARTIFACT_FILE} but no model weights (model.safetensors): copy the whole "
                            "artifact folder, or train again with python -m training.train")
    if meta.get("preprocessing_version") != PREPROCESSING_VERSION:
        raise ArtifactError(
            f"{path} was trained with preprocessing version {meta.get('preprocessing_version')!r} but this code "
            f"cleans text as version {PREPROCESSING_VERSION!r}; retrain it so serving sees what training saw"
        )
    return meta


@dataclass(frozen=True)
class Prediction:
    labels: list[str]  # directions that pass their thresholds, or [other]
    top_label: str
    scores: dict[str, float]  # every label id -> probability; other = 1 - max direction probability
    truncated: bool = False  # the unit was longer than the model's max_length and was cut

    def to_dict(self) -> dict:
        return {"labels": self.labels, "top_label": self.top_label, "scores": self.scores, "truncated": self.truncated}


def decide(probs: np.ndarray, directions: Sequence[str], thresholds: Sequence[float], other: str) -> list[Prediction]:
    """Turn an (n, directions) probability matrix into label sets."""
    thresholds_arr = np.asarray(thresholds, dtype=np.float64)
    out = []
    for row in np.asarray(probs, dtype=np.float64):
        passed = [directions[i] for i in np.flatnonzero(row >= thresholds_arr)]
        other_score = float(1.0 - row.max()) if row.size else 1.0
        scores = {label: round(float(p), 6) for label, p in zip(directions, row)}
        scores[other] = round(other_score, 6)
        if passed:
            top = directions[int(np.argmax(row))]
            # Order by probability so the first label is the strongest.
            passed.sort(key=lambda label: -scores[label])
            out.append(Prediction(passed, top, scores))
        else:
            out.append(Prediction([other], other, scores))
    return out


# The cost model `plan_batches` weighs padding against another forward pass with, in units of one
# padded token: a pass costs FORWARD_OVERHEAD_TOKENS (mostly reading every weight from memory once,
# which a small batch cannot amortise) plus, per row of L tokens, L x (1 + ATTENTION_PER_TOKEN x L)
# (attention grows with L squared). Fitted for e5-small on 2 cores by `python -m bench.inference`
# ("forward_cost" in bench/results/inference.json: 74 tokens and 0.001; an earlier fit gave 50 and
# 0.002, the values used here); the plans change little for values 2x either side.
FORWARD_OVERHEAD_TOKENS = 50
ATTENTION_PER_TOKEN = 0.002


def plan_batches(lengths: Sequence[int], batch_size: int, overhead_tokens: float = FORWARD_OVERHEAD_TOKENS,
                 attention_per_token: float = ATTENTION_PER_TOKEN) -> list[np.ndarray]:
    """Split texts into padded batches of at most `batch_size` with the least estimated work.

    A batch costs one forward pass (`overhead_tokens`) plus rows x the cost of its longest text,
    since every row is padded to the longest. Cutting the length-sorted order into consecutive windows of
    `batch_size` is near-optimal for a large crawl, but a few dozen texts of mixed length (one
    adaptive batch of the service, one chunk of a page) padded to their longest do about twice
    the real work; an exact split of the sorted order (dynamic programming, O(n x batch_size))
    puts short and long texts in separate passes when that saves more than a pass costs.
    Returns index arrays into `lengths`, shortest texts first.
    """
    n = len(lengths)
    if n == 0:
        return []
    order = np.argsort(np.asarray(lengths), kind="stable")
    sorted_len = np.asarray(lengths, dtype=np.int64)[order]
    best = np.zeros(n + 1, dtype=np.float64)  # best[j]: least cost of the first j sorted texts
    cut = np.zeros(n + 1, dtype=np.int64)  # where the last batch of that plan starts
    for j in range(1, n + 1):
        starts = np.arange(max(0, j - batch_size), j)
        longest = sorted_len[j - 1]
        costs = best[starts] + overhead_tokens + (j - starts) * longest * (1 + attention_per_token * longest)
        k = int(np.argmin(costs))
        best[j], cut[j] = costs[k], starts[k]
    bounds, j = [], n
    while j > 0:
        bounds.append((int(cut[j]), j))
        j = int(cut[j])
    return [order[a:b] for a, b in reversed(bounds)]


def label_matrix(predictions: list[Prediction], directions: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(directions)}
    y = np.zeros((len(predictions), len(directions)), dtype=np.float32)
    for row, pred in enumerate(predictions):
        for label in pred.labels:
            if label in index:
                y[row, index[label]] = 1
    return y


class Classifier:
    """A trained model plus everything needed to turn its logits into labels."""

    def __init__(self, model, tokenizer, directions: Sequence[str], thresholds: Sequence[float], other: str,
                 max_length: int, batch_size: int = 64, meta: dict | None = None, text_prefix: str = ""):
        self.model = model.eval()
        # Put before every cleaned unit ahead of tokenisation, as in training (model.text_prefix).
        self.text_prefix = text_prefix
        self.tokenizer = tokenizer
        self.directions = list(directions)
        self.thresholds = [float(t) for t in thresholds]
        self.other = other
        self.max_length = max_length
        self.batch_size = batch_size
        self.meta = meta or {}
        self.precision = "fp32"
        self._runner = self.model  # what runs forward passes: the model, its int8 copy or an ONNX Runtime session
        self.model_dir: Path | None = None  # where an exported ONNX graph is kept (the artifact folder)
        # The weights' fingerprint when loaded from an artifact folder: graphs are exported with it and
        # reused only when they carry it (None: unknown weights, a graph is always exported afresh).
        self.weights_fingerprint: str | None = None
        # model.tfidf_fusion: the TF-IDF half of the model (training/lexical.py); probabilities are the
        # mean of the encoder's and its, and the thresholds were tuned on that mean.
        self.lexical = None

    @property
    def device(self):
        return next(self.model.parameters()).device

    def available_precisions(self) -> list[str]:
        """Concrete precisions this device can run, fp32 first."""
        import torch

        if self.device.type == "cuda":
            return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
        from training import onnx_runtime
        from training.runtime import cpu_offers_bf16

        # bf16 only as a candidate for `auto` to time: on some CPUs with AVX-512 BF16 it is slower than fp32.
        options = ["fp32", "bf16", "int8"] if cpu_offers_bf16() else ["fp32", "int8"]
        return options + (["onnx", "onnx-int8"] if onnx_runtime.available() else [])

    def set_precision(self, precision: str, calibration: Sequence[str] | None = None) -> str:
        """Run forward passes in fp32, bf16 or fp16 autocast, int8 dynamic quantization, or
        ONNX Runtime (onnx: fp32, onnx-int8: int8 weights) on the exported graph.

        `auto` times every variant this device offers on the calibration units and keeps
        the fastest whose label sets agree with fp32 on >= AUTO_MIN_AGREEMENT of them and that beats
        the best so far by AUTO_MIN_SPEEDUP.
        """
        import torch

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "auto":
            precision = self._pick_precision(calibration)
        if precision in ("onnx", "onnx-int8"):
            from training import onnx_runtime

            if self.device.type != "cpu":
                raise ValueError("the onnx precisions run ONNX Runtime on the CPU; use fp16 or bf16 on a GPU")
            if not onnx_runtime.available():
                raise ValueError(f"precision {precision} needs ONNX Runtime: {onnx_runtime.INSTALL_HINT}")
            graph = onnx_runtime.graph_for(precision, self.model, self.tokenizer, self.model_dir,
                                           self.weights_fingerprint)
            self._runner = onnx_runtime.OrtRunner(graph)
        elif precision == "int8":
            if self.device.type != "cpu":
                raise ValueError("int8 dynamic quantization runs on the CPU only; use fp16 or bf16 on a GPU")
            import copy
            import warnings

            with warnings.catch_warnings():
                # torch.ao dynamic quantization is deprecated in favour of torchao, which has no
                # CPU dynamic-int8 path for this torch yet; it still works and is the fastest here.
                warnings.simplefilter("ignore")
                self._runner = torch.ao.quantization.quantize_dynamic(
                    copy.deepcopy(self.model), {torch.nn.Linear}, dtype=torch.qint8
                )
        else:
            if precision == "fp16" and self.device.type != "cuda":
                raise ValueError("fp16 needs a GPU; on the CPU use bf16 or int8")
            self._runner = self.model
        self.precision = precision
        return precision

    def _time_scoring(self, option: str, encoded: list[list[int]]) -> tuple[float, np.ndarray]:
        """Seconds to score `encoded` in precision `option` (after a warm-up batch), and the probabilities."""
        import time

        self.set_precision(option)
        self._probabilities(encoded[: self.batch_size])  # warm-up
        started = time.perf_counter()
        probs = self._probabilities(encoded)
        return time.perf_counter() - started, probs

    def _pick_precision(self, calibration: Sequence[str] | None) -> str:
        options = self.available_precisions()
        texts = list(calibration or [])
        self.precision_report = {"precision": "fp32", "decided_by": "auto", "device": self.device.type,
                                 "options": {}}
        if len(texts) < 20:
            log.info("precision=auto: no calibration units, using fp32")
            self.precision_report["note"] = "no calibration units"
            return "fp32"
        encoded, _ = self.encode(texts)
        lexical = self.lexical.probabilities(self._capped(texts)) if self.lexical is not None else None
        results = {}
        for option in options:
            seconds, probs = self._time_scoring(option, encoded)
            results[option] = (seconds, probs if lexical is None else (probs + lexical) / 2)
        reference = label_matrix(decide(results["fp32"][1], self.directions, self.thresholds, self.other), self.directions)
        best = "fp32"
        for option, (seconds, probs) in results.items():
            labels = label_matrix(decide(probs, self.directions, self.thresholds, self.other), self.directions)
            agreement = float((labels == reference).all(axis=1).mean())
            log.info("precision=auto: %s %.0f units/s, label-set agreement with fp32 %.3f",
                     option, len(texts) / seconds, agreement)
            self.precision_report["options"][option] = {"units_per_s": round(len(texts) / seconds, 1),
                                                        "agreement_with_fp32": round(agreement, 4)}
            if agreement >= AUTO_MIN_AGREEMENT and seconds * AUTO_MIN_SPEEDUP < results[best][0]:
                best = option
        log.info("precision=auto chose %s", best)
        self.precision_report["precision"] = best
        return best

    @property
    def labels(self) -> list[str]:
        return [*self.directions, self.other]

    @classmethod
    def from_artifact(cls, path: str | Path, batch_size: int = 64, device: str | None = None,
                      precision: str | None = None) -> "Classifier":
        """Load an artifact folder written by `python -m training.train` (or its copy in the BentoML store).

        precision None or "auto": the precision recorded in the folder (precision.json, written by
        `python -m serving.package` or the first auto load); with none recorded, None means fp32 and
        "auto" decides once and records the choice. fp32/bf16/fp16/int8 override the record.
        """
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        import training.modeling  # noqa: F401  registers our pooled classifier with the Auto classes

        path = Path(path)
        meta = read_artifact_meta(path)
        # Taken before loading: files derived from these weights (ONNX graphs, precision.json) are
        # matched against it, never against whatever the folder holds later.
        fingerprint = weights_fingerprint(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        classifier = cls(model, tokenizer, meta["directions"], meta["thresholds"], meta["other"],
                         meta["max_length"], batch_size=batch_size, meta=meta,
                         text_prefix=meta.get("text_prefix", ""))
        classifier.model_dir = path
        classifier.weights_fingerprint = fingerprint
        if meta.get("tfidf_fusion"):
            from training.lexical import LexicalModel

            if not LexicalModel.present(path):
                raise ArtifactError(f"{path} was trained with model.tfidf_fusion but its TF-IDF files are missing; "
                                    "copy the whole artifact folder")
            try:
                classifier.lexical = LexicalModel.load(path)
            except Exception as exc:  # bad JSON, a damaged .npz (zip) or missing arrays: all mean a broken copy
                raise ArtifactError(f"{path}: its TF-IDF files cannot be read ({type(exc).__name__}: {exc}); copy "
                                    "the whole artifact folder again or retrain") from None
        classifier.precision_source = "argument"
        if precision in (None, "auto"):
            record = recorded_precision(path, fingerprint)
            if record and record["precision"] in classifier.available_precisions():
                precision, classifier.precision_source = record["precision"], "recorded"
            elif record:
                log.warning("%s records precision %s, which this device cannot run; using fp32",
                            path / PRECISION_FILE, record["precision"])
                precision, classifier.precision_source = "fp32", "fallback"
            elif precision is None:
                precision, classifier.precision_source = "fp32", "default"
        calibration_path = path / CALIBRATION_FILE
        calibration = calibration_path.read_text(encoding="utf-8").splitlines() if calibration_path.is_file() else None
        if precision == "auto":  # said first: timing takes minutes and may write ONNX graphs into the folder
            log.info("precision=auto: none recorded in %s for these weights; timing %s on %d calibration units, then "
                     "recording the choice in %s", path, ", ".join(classifier.available_precisions()),
                     len(calibration or []), path / PRECISION_FILE)
        classifier.set_precision(precision, calibration)
        if precision == "auto":  # nothing recorded yet: decide once, record, and reuse from now on
            if record_precision(path, classifier.precision_report, fingerprint):
                classifier.precision_source = "decided"
            else:
                log.warning("precision=auto: cannot record the choice in %s, so using fp32 rather than a choice that "
                            "could differ at the next load; package the model (python -m serving.package) or pass "
                            "an explicit precision", path)
                classifier.set_precision("fp32")
                classifier.precision_source = "fallback"
        return classifier

    @property
    def max_chars(self) -> int:
        """Characters of a unit the model reads: more than max_length tokens' worth of any tokenizer."""
        return self.max_length * MAX_CHARS_PER_TOKEN

    def _capped(self, texts: Sequence[str]) -> list[str]:
        # Cap characters first, for the tokenizer and the TF-IDF half alike: overflow windows or the
        # n-grams of an uncut 50 MB line cost gigabytes, and the encoder reads only its start anyway.
        return [text[: self.max_chars] for text in texts]

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids per text (cut to max_length) and a flag for the texts that were cut."""
        if not texts:
            return [], np.zeros(0, dtype=bool)
        cut = np.array([len(text) > self.max_chars for text in texts], dtype=bool)
        texts = self._capped(texts)
        if self.text_prefix:
            texts = [self.text_prefix + text for text in texts]
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, return_overflowing_tokens=True)
        mapping = enc.get("overflow_to_sample_mapping")
        if mapping is None:  # tokenizers without overflow support: a full-length row may have been cut
            ids = enc["input_ids"]
            return ids, cut | np.array([len(row) >= self.max_length for row in ids], dtype=bool)
        ids: list = [None] * len(texts)
        truncated = cut.copy()
        for row, sample in enumerate(mapping):
            if ids[sample] is None:
                ids[sample] = enc["input_ids"][row]
            else:
                truncated[sample] = True
        return ids, truncated

    def probabilities(self, texts: Sequence[str], progress: bool = False, fused: bool = True) -> np.ndarray:
        """Direction probabilities for already-cleaned texts, in input order: the encoder's sigmoid, averaged
        with the TF-IDF model's when the artifact has one (fused=False: the encoder's alone)."""
        probs = self._probabilities(self.encode(texts)[0], progress)
        return self.fuse(probs, texts) if fused else probs

    def fuse(self, probs: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """The encoder's probabilities `probs` for `texts`, averaged with the TF-IDF half's if there is one."""
        if self.lexical is None or not len(texts):
            return probs
        return (probs + self.lexical.probabilities(self._capped(texts))) / 2

    def _probabilities(self, encoded: list[list[int]], progress: bool = False) -> np.ndarray:
        # Units are sorted by length and padded per batch (plan_batches): on mixed-length crawls
        # that halves the padding work compared with fixed-length batches.
        import torch

        out = np.zeros((len(encoded), len(self.directions)), dtype=np.float32)
        if not encoded:
            return out
        batches = plan_batches([len(ids) for ids in encoded], self.batch_size)
        device = self.device
        autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="scoring", unit="batch")
        with torch.inference_mode():
            for idx in batches:
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
                batch = {k: v.to(device) for k, v in batch.items()}
                with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                    logits = self._runner(**batch).logits.float()
                out[idx] = torch.sigmoid(logits).cpu().numpy()
        return out

    def predict(self, texts: Sequence[str], already_clean: bool = False, progress: bool = False) -> list[Prediction]:
        cleaned = list(texts) if already_clean else [clean(t) for t in texts]
        if not cleaned:
            return []
        encoded, truncated = self.encode(cleaned)
        probs = self.fuse(self._probabilities(encoded, progress), cleaned)
        predictions = decide(probs, self.directions, self.thresholds, self.other)
        return [replace(pred, truncated=bool(cut)) for pred, cut in zip(predictions, truncated)]
