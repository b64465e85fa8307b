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

from training.text import PREPROCESSING_VERSION, clean

log = logging.getLogger(__name__)

ARTIFACT_FILE = "artifact.json"


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
                 max_length: int, batch_size: int = 64, meta: dict | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.directions = list(directions)
        self.thresholds = [float(t) for t in thresholds]
        self.other = other
        self.max_length = max_length
        self.batch_size = batch_size
        self.meta = meta or {}

    @property
    def labels(self) -> list[str]:
        return [*self.directions, self.other]

    @classmethod
    def from_artifact(cls, path: str | Path, batch_size: int = 64, device: str | None = None) -> "Classifier":
        """Load an artifact folder written by `python -m training.train`."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        meta_path = path / ARTIFACT_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path} is not a training artifact (no {ARTIFACT_FILE}); train one with python -m training.train")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("preprocessing_version") != PREPROCESSING_VERSION:
            raise ValueError(
                f"artifact {path} was trained with preprocessing version {meta.get('preprocessing_version')!r}, "
                f"this code has {PREPROCESSING_VERSION!r}; retrain it so serving sees what training saw"
            )
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        return cls(model, tokenizer, meta["directions"], meta["thresholds"], meta["other"],
                   meta["max_length"], batch_size=batch_size, meta=meta)

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids per text (cut to max_length) and a flag for the texts that were cut."""
        if not texts:
            return [], np.zeros(0, dtype=bool)
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, return_overflowing_tokens=True)
        mapping = enc.get("overflow_to_sample_mapping")
        if mapping is None:  # tokenizers without overflow support: a full-length row may have been cut
            ids = enc["input_ids"]
            return ids, np.array([len(row) >= self.max_length for row in ids], dtype=bool)
        ids: list = [None] * len(texts)
        truncated = np.zeros(len(texts), dtype=bool)
        for row, sample in enumerate(mapping):
            if ids[sample] is None:
                ids[sample] = enc["input_ids"][row]
            else:
                truncated[sample] = True
        return ids, truncated

    def probabilities(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Sigmoid probabilities for already-cleaned texts, in input order."""
        return self._probabilities(self.encode(texts)[0], progress)

    def _probabilities(self, encoded: list[list[int]], progress: bool = False) -> np.ndarray:
        # Units are sorted by length and padded per batch: on mixed-length crawls
        # that halves the padding work compared with fixed-length batches.
        import torch

        out = np.zeros((len(encoded), len(self.directions)), dtype=np.float32)
        if not encoded:
            return out
        order = np.argsort([len(ids) for ids in encoded], kind="stable")
        device = next(self.model.parameters()).device
        batches = range(0, len(order), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="scoring", unit="batch")
        with torch.inference_mode():
            for start in batches:
                idx = order[start:start + self.batch_size]
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
                batch = {k: v.to(device) for k, v in batch.items()}
                logits = self.model(**batch).logits.float()
                out[idx] = torch.sigmoid(logits).cpu().numpy()
        return out

    def predict(self, texts: Sequence[str], already_clean: bool = False, progress: bool = False) -> list[Prediction]:
        cleaned = list(texts) if already_clean else [clean(t) for t in texts]
        if not cleaned:
            return []
        encoded, truncated = self.encode(cleaned)
        predictions = decide(self._probabilities(encoded, progress), self.directions, self.thresholds, self.other)
        return [replace(pred, truncated=bool(cut)) for pred, cut in zip(predictions, truncated)]
