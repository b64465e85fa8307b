"""Scoring: cleaned units -> direction probabilities -> label sets.

The one prediction path. Training evaluation, the HTTP service and the batch scorer all call
`Classifier`, so tokenisation, fusion, thresholds and the `other` rule are applied the same way
everywhere. Loading is runtime/artifact.py's job, choosing a precision runtime/precision.py's;
`Classifier.from_artifact` puts the two together.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from runtime import precision as precisions
from runtime.artifact import calibration_units, load_artifact
from runtime.batching import plan_batches
from runtime.decide import Prediction, decide
from runtime.text import clean

log = logging.getLogger(__name__)

# Characters of one unit handed to the tokenizer: far beyond max_length tokens for any tokenizer
# we use, so a longer unit is certainly cut, and tokenising a 50 MB line costs no more than this.
MAX_CHARS_PER_TOKEN = 16


def int8_copy(model, select: Callable[[str], bool] | None = None, per_channel: bool = False):
    """A copy of `model` with dynamic int8 in the Linear layers whose names `select` accepts (all when None);
    weight scales per output channel when `per_channel`, else one per tensor."""
    import copy
    import warnings

    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    chosen = {name: qconfig for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and (select is None or select(name))}
    with warnings.catch_warnings():
        # torch.ao dynamic quantization is deprecated in favour of torchao, which has no
        # CPU dynamic-int8 path for this torch yet; it still works and is the fastest here.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), chosen, dtype=torch.qint8)


class Classifier:
    """A trained model plus everything needed to turn its logits into labels."""

    def __init__(self, model, tokenizer, directions: Sequence[str], thresholds: Sequence[float], other: str,
                 max_length: int, batch_size: int = 64, meta: dict | None = None, text_prefix: str = "",
                 lexical: Any = None, model_dir: Path | None = None, weights_fingerprint: str | None = None):
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
        # model.tfidf_fusion: the TF-IDF half of the model (runtime/lexical.py); probabilities are the
        # mean of the encoder's and its, and the thresholds were tuned on that mean.
        self.lexical = lexical
        self.model_dir = model_dir  # where an exported ONNX graph is kept (the artifact folder)
        # The weights' fingerprint when loaded from an artifact folder: graphs are exported with it and
        # reused only when they carry it (None: unknown weights, a graph is always exported afresh).
        self.weights_fingerprint = weights_fingerprint
        self.precision = "fp32"
        # Where the precision came from: argument, recorded, default, decided (auto, now) or fallback.
        self.precision_source = "argument"
        self._runner = self.model  # what runs forward passes: the model, its int8 copy or an ONNX Runtime session
        # Where the model ran once its torch weights were released for an ONNX Runtime session (None: not released).
        self._released_from = None

    @property
    def device(self):
        return self._released_from or next(self.model.parameters()).device

    def release_torch_weights(self) -> None:
        """Free the torch weights while an ONNX Runtime session runs the forward passes: the session holds
        its own copy, and a serving worker need not hold two (about the model's size in memory)."""
        if self.precision not in precisions.ONNX_PRECISIONS:
            raise ValueError(f"the torch weights run the {self.precision} forward passes; only an onnx "
                             "precision can do without them")
        device = self.device
        self.model.to("meta")  # the module stays (config, structure); its tensors hold no memory
        self._released_from = device

    @property
    def labels(self) -> list[str]:
        return [*self.directions, self.other]

    def available_precisions(self) -> list[str]:
        """Concrete precisions this device can run, fp32 first."""
        return precisions.offered(self.device.type)

    def set_precision(self, precision: str) -> str:
        """Run forward passes in fp32, bf16 or fp16 autocast, int8 dynamic quantization, or
        ONNX Runtime (onnx: fp32, onnx-int8: int8 weights) on the exported graph.
        (`auto` is a decision, not a precision: runtime.precision.measure makes it.)"""
        if precision not in precisions.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(precisions.PRECISIONS)}, got {precision!r}"
                             + (" (runtime.precision.measure decides auto)" if precision == precisions.AUTO else ""))
        if self._released_from is not None:
            raise ValueError("this classifier's torch weights were released for ONNX Runtime; load the artifact "
                             "again (Classifier.from_artifact) to score in another precision")
        if precision in precisions.ONNX_PRECISIONS:
            from runtime import onnx_runtime

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
            blocks = getattr(self.model.config, "num_hidden_layers", 0)
            self._runner = int8_copy(self.model, lambda name: precisions.int8_layer(name, blocks))
        else:
            if precision == "fp16" and self.device.type != "cuda":
                raise ValueError("fp16 needs a GPU; on the CPU use bf16 or int8")
            self._runner = self.model
        self.precision = precision
        return precision

    @classmethod
    def from_artifact(cls, path: str | Path, batch_size: int = 64, device: str | None = None,
                      precision: str | None = None) -> "Classifier":
        """Load an artifact folder written by `python -m training.train` (or its copy in the BentoML store).

        precision None or "auto": the precision recorded in the folder (precision.json, written by
        `python -m serving.package` or the first auto load); with none recorded, None means fp32 and
        "auto" decides once and records the choice. fp32/bf16/fp16/int8/onnx/onnx-int8 override the record.
        """
        if precision is not None:
            precisions.check(precision)
        loaded = load_artifact(path, device)
        meta = loaded.meta
        classifier = cls(loaded.model, loaded.tokenizer, meta["directions"], meta["thresholds"], meta["other"],
                         meta["max_length"], batch_size=batch_size, meta=meta, text_prefix=meta.get("text_prefix", ""),
                         lexical=loaded.lexical, model_dir=loaded.path, weights_fingerprint=loaded.fingerprint)
        chosen, source = precisions.resolve(loaded.path, precision, loaded.fingerprint,
                                            classifier.available_precisions())
        if chosen != precisions.AUTO:
            classifier.set_precision(chosen)
            classifier.precision_source = source
            if chosen in precisions.ONNX_PRECISIONS:
                classifier.release_torch_weights()
            return classifier
        # Nothing recorded for these weights: decide once, record, and reuse from now on. Said first:
        # timing takes minutes and may write ONNX graphs into the folder.
        calibration = calibration_units(loaded.path)
        log.info("precision=auto: none recorded in %s for these weights; timing %s on %d calibration units, then "
                 "recording the choice in %s", loaded.path, ", ".join(classifier.available_precisions()),
                 len(calibration or []), loaded.path / precisions.PRECISION_FILE)
        decided = precisions.measure(classifier, calibration)
        classifier.set_precision(decided["precision"])
        if precisions.record_precision(loaded.path, decided, loaded.fingerprint):
            classifier.precision_source = "decided"
        else:
            log.warning("precision=auto: cannot record the choice in %s, so using fp32 rather than a choice that "
                        "could differ at the next load; package the model (python -m serving.package) or pass "
                        "an explicit precision", loaded.path)
            classifier.set_precision("fp32")
            classifier.precision_source = "fallback"
        if classifier.precision in precisions.ONNX_PRECISIONS:
            classifier.release_torch_weights()
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
        probs = self.encoder_probabilities(self.encode(texts)[0], progress)
        return self.fuse(probs, texts) if fused else probs

    def fuse(self, probs: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """The encoder's probabilities `probs` for `texts`, averaged with the TF-IDF half's if there is one."""
        if self.lexical is None or not len(texts):
            return probs
        return (probs + self.lexical.probabilities(self._capped(texts))) / 2

    def encoder_probabilities(self, encoded: list[list[int]], progress: bool = False) -> np.ndarray:
        """The encoder's sigmoid for token ids (from `encode`), in input order, at the current precision."""
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

    def scores(self, texts: Sequence[str], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Served probabilities of already-cleaned texts (fused when the model has a TF-IDF half) and a flag
        for the texts that were cut to max_length: what `predict` decides on."""
        encoded, truncated = self.encode(texts)
        return self.fuse(self.encoder_probabilities(encoded, progress), texts), truncated

    def decide(self, probs: np.ndarray, truncated: np.ndarray) -> list[Prediction]:
        """Label sets from `scores`' output."""
        predictions = decide(probs, self.directions, self.thresholds, self.other)
        return [replace(pred, truncated=bool(cut)) for pred, cut in zip(predictions, truncated)]

    def predict(self, texts: Sequence[str], already_clean: bool = False, progress: bool = False) -> list[Prediction]:
        cleaned = list(texts) if already_clean else [clean(t) for t in texts]
        if not cleaned:
            return []
        return self.decide(*self.scores(cleaned, progress))
