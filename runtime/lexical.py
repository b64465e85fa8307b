"""The lexical model: character 1-3-gram TF-IDF + one logistic regression per direction.

It is the TF-IDF baseline of every report and, with `model.tfidf_fusion`, half of the
served model: the artifact's direction probabilities are then the mean of the encoder's
and this model's. It is stored as plain arrays and a JSON vocabulary (no pickle), so
loading an artifact never runs code from it; scoring is a sparse matrix product and a
sigmoid, which is what scikit-learn's `predict_proba` computes for it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

VOCABULARY_FILE = "tfidf_vocabulary.json"
WEIGHTS_FILE = "tfidf_weights.npz"
# A direction without a single training example gets a constant predictor; its logit is this bound.
_CONSTANT_LOGIT = 30.0


class LexicalModel:
    def __init__(self, vectorizer, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.vectorizer = vectorizer
        # Kept as (features, directions) in C order: a sparse row times the transposed view of a
        # (directions, features) array is copied by SciPy on every call; this layout is not.
        self.weights = np.ascontiguousarray(np.asarray(coef, dtype=np.float64).T)
        self.intercept = np.asarray(intercept, dtype=np.float64)  # (directions,)

    @property
    def coef(self) -> np.ndarray:
        """(directions, features), as scikit-learn lays out coef_."""
        return self.weights.T

    @classmethod
    def fit(cls, texts: Sequence[str], y: np.ndarray, seed: int = 0) -> "LexicalModel":
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        vectorizer = _vectorizer()
        x = vectorizer.fit_transform(list(texts))
        # Balanced class weights: each direction is a few percent of the units.
        model = OneVsRestClassifier(LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000,
                                                       random_state=seed))
        with warnings.catch_warnings():
            # A direction with no training example becomes a constant predictor; make_splits already warned.
            warnings.simplefilter("ignore", UserWarning)
            model.fit(x, y)
        coef = np.zeros((y.shape[1], x.shape[1]))
        intercept = np.zeros(y.shape[1])
        for d, estimator in enumerate(model.estimators_):
            if hasattr(estimator, "coef_"):
                coef[d], intercept[d] = estimator.coef_[0], estimator.intercept_[0]
            else:  # scikit-learn's constant predictor for a direction that is always 0 (or 1)
                intercept[d] = _CONSTANT_LOGIT if float(np.ravel(estimator.predict_proba(x[:1])[:, 1])[0]) >= 0.5 \
                    else -_CONSTANT_LOGIT
        return cls(vectorizer, coef, intercept)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.intercept)), dtype=np.float32)
        logits = self.vectorizer.transform(list(texts)) @ self.weights + self.intercept
        return (1.0 / (1.0 + np.exp(-np.asarray(logits)))).astype(np.float32)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        vocabulary = sorted(self.vectorizer.vocabulary_, key=self.vectorizer.vocabulary_.get)
        (folder / VOCABULARY_FILE).write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
        np.savez_compressed(folder / WEIGHTS_FILE, idf=self.vectorizer.idf_, coef=self.coef.astype(np.float32),
                            intercept=self.intercept)

    @classmethod
    def load(cls, folder: str | Path) -> "LexicalModel":
        folder = Path(folder)
        vocabulary = json.loads((folder / VOCABULARY_FILE).read_text(encoding="utf-8"))
        with np.load(folder / WEIGHTS_FILE, allow_pickle=False) as weights:
            vectorizer = _vectorizer({gram: i for i, gram in enumerate(vocabulary)})
            vectorizer.idf_ = weights["idf"]
            return cls(vectorizer, weights["coef"], weights["intercept"])

    @staticmethod
    def present(folder: str | Path) -> bool:
        return (Path(folder) / VOCABULARY_FILE).is_file() and (Path(folder) / WEIGHTS_FILE).is_file()


def _vectorizer(vocabulary: dict[str, int] | None = None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=1, vocabulary=vocabulary)
