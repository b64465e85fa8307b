"""Probabilities -> label sets: the thresholds and the `other` rule, the same in training and serving."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


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
    """The (n, directions) 0/1 matrix of the predicted label sets (`other` is the all-zero row)."""
    index = {label: i for i, label in enumerate(directions)}
    y = np.zeros((len(predictions), len(directions)), dtype=np.float32)
    for row, pred in enumerate(predictions):
        for label in pred.labels:
            if label in index:
                y[row, index[label]] = 1
    return y
