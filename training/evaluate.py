"""Metrics, threshold tuning, the two baselines, the co-occurrence figure and report.md."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.taxonomy import Taxonomy
from training.data import Example, multi_hot

# The systems an evaluation report compares.
MODEL, TFIDF, RULES, FROZEN = "model", "tfidf+logreg", "cue rules", "frozen encoder+logreg"
# Late fusion, measured beside the others when the model is the encoder alone: the mean of its and
# TF-IDF's probabilities with thresholds set by train.threshold_rule — what model.tfidf_fusion serves.
FUSION = "model+tfidf mean"
# With model.tfidf_fusion the model row is that mean; this row is its encoder half alone.
ENCODER = "encoder alone"


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def with_other(y: np.ndarray) -> np.ndarray:
    """Append the `other` column (1 where no direction is set)."""
    y = np.asarray(y)
    return np.hstack([y, (y.sum(axis=1) == 0)[:, None].astype(y.dtype)])


def metrics(y_true: np.ndarray, y_pred: np.ndarray, taxonomy: Taxonomy) -> dict:
    """Per-label P/R/F1/support over directions + other, micro and macro F1, exact match."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    t, p = with_other(y_true).astype(int), with_other(y_pred).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(t, p, average=None, zero_division=0)
    labels = taxonomy.all_labels
    present = support > 0
    return {
        "per_label": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i])}
            for i, label in enumerate(labels)
        },
        "micro_f1": float(f1_score(t, p, average="micro", zero_division=0)),
        # Labels absent from the test set would count as F1 0 and say nothing about the model.
        "macro_f1": float(np.mean(f1[present])) if present.any() else 0.0,
        "macro_f1_directions": float(np.mean(f1[:-1][present[:-1]])) if present[:-1].any() else 0.0,
        "exact_match": float(accuracy_score(t, p)),
        "n": int(len(t)),
    }


def macro_average_precision(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean over directions with at least one positive of sklearn's average precision (threshold-free)."""
    from sklearn.metrics import average_precision_score

    y_true = np.asarray(y_true)
    scores = [average_precision_score(y_true[:, j], probs[:, j]) for j in range(y_true.shape[1]) if y_true[:, j].any()]
    return float(np.mean(scores)) if scores else 0.0


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray, default: float = 0.5) -> list[float]:
    """Per direction, the grid threshold with the best F1 on validation (ties: closest to 0.5)."""
    from sklearn.metrics import f1_score

    thresholds = []
    for j in range(y_true.shape[1]):
        if y_true[:, j].sum() == 0:
            thresholds.append(default)
            continue
        scores = [f1_score(y_true[:, j], probs[:, j] >= t, zero_division=0) for t in THRESHOLD_GRID]
        best = max(scores)
        candidates = [t for t, s in zip(THRESHOLD_GRID, scores) if s == best]
        thresholds.append(float(min(candidates, key=lambda t: abs(t - 0.5))))
    return thresholds


def tune_global_threshold(y_true: np.ndarray, probs: np.ndarray, default: float = 0.5) -> float:
    """The one grid threshold, shared by every direction, with the best macro F1 over the directions present."""
    from sklearn.metrics import f1_score

    present = np.asarray(y_true).sum(axis=0) > 0
    if not present.any():
        return default
    scores = [f1_score(y_true[:, present], probs[:, present] >= t, average="macro", zero_division=0)
              for t in THRESHOLD_GRID]
    best = max(scores)
    return float(min((t for t, s in zip(THRESHOLD_GRID, scores) if s == best), key=lambda t: abs(t - default)))


def choose_thresholds(rule: str, y_val: np.ndarray, val_probs: np.ndarray) -> list[float]:
    """Decision thresholds by `train.threshold_rule`: `validation` (one per direction, tuned on the validation
    split), `global` (one for all, tuned there) or `flat` (0.5)."""
    n = np.asarray(y_val).shape[1]
    if rule == "validation":
        return tune_thresholds(y_val, val_probs)
    if rule == "global":
        return [tune_global_threshold(y_val, val_probs)] * n
    if rule == "flat":
        return [0.5] * n
    raise ValueError(f"unknown threshold rule {rule!r}")


# The rules compared in a --cv report: the deployable ones plus `real out-of-fold`, per-direction thresholds
# tuned on the held-out real units of the *other* folds (what a CV over more real pages could give a model).
DECISION_RULES = ("validation", "global", "flat", "real out-of-fold")


def decision_table(folds: list[dict[str, np.ndarray]], taxonomy: Taxonomy) -> dict[str, dict[str, list[float]]]:
    """Macro F1 per fold of each (system, threshold rule) from the probabilities a --cv run kept.

    Each fold dict holds `y_test`, `y_val` and, per system, `<system>_test` / `<system>_val` probabilities
    for `encoder` and `tfidf`; `fused` is their mean, as model.tfidf_fusion serves it.
    """
    systems = {"encoder alone": lambda f, part: f[f"encoder_{part}"],
               "encoder + tfidf mean": lambda f, part: (f[f"encoder_{part}"] + f[f"tfidf_{part}"]) / 2}
    table: dict[str, dict[str, list[float]]] = {}
    for system, probs in systems.items():
        table[system] = {rule: [] for rule in DECISION_RULES}
        for i, fold in enumerate(folds):
            test = probs(fold, "test")
            for rule in DECISION_RULES:
                if rule == "real out-of-fold":
                    others = [g for j, g in enumerate(folds) if j != i]
                    thresholds = tune_thresholds(np.vstack([g["y_test"] for g in others]),
                                                 np.vstack([probs(g, "test") for g in others]))
                else:
                    thresholds = choose_thresholds(rule, fold["y_val"], probs(fold, "val"))
                pred = (test >= np.asarray(thresholds)).astype(np.float32)
                table[system][rule].append(metrics(fold["y_test"], pred, taxonomy)["macro_f1"])
    return table


def decision_markdown(table: dict[str, dict[str, list[float]]]) -> str:
    rules = list(next(iter(table.values())))
    rows = ["| system | " + " | ".join(f"{r} thresholds" for r in rules) + " |", "|---|" + "---:|" * len(rules)]
    for system, by_rule in table.items():
        rows.append(f"| {system} | " + " | ".join(mean_std(v) for v in by_rule.values()) + " |")
    return "\n".join(rows)


def cue_rules(texts: Sequence[str], taxonomy: Taxonomy) -> np.ndarray:
    """The untrained dictionary baseline: every direction one of whose cues appears in the text."""
    y = np.zeros((len(texts), len(taxonomy.directions)), dtype=np.float32)
    for row, text in enumerate(texts):
        for j, label in enumerate(taxonomy.directions):
            if any(cue.lower() in text.lower() for cue in taxonomy.cues[label]):
                y[row, j] = 1
    return y


@dataclass
class TfidfBaseline:
    """Character 1-3-gram TF-IDF + one-vs-rest logistic regression, thresholds tuned like the model's."""

    seed: int = 0

    def fit(self, train: list[Example], val: list[Example], taxonomy: Taxonomy, trained=None) -> "TfidfBaseline":
        """`trained`: a LexicalModel already fitted on `train` with this seed (the fused model's half), reused."""
        from runtime.lexical import LexicalModel

        self.model = trained or LexicalModel.fit([ex.text for ex in train], multi_hot(train, taxonomy), seed=self.seed)
        self.thresholds = tune_thresholds(multi_hot(val, taxonomy), self.probabilities([ex.text for ex in val]))
        return self

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.probabilities(texts)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return (self.probabilities(texts) >= np.asarray(self.thresholds)).astype(np.float32)


@dataclass
class FrozenFeatureBaseline:
    """Logistic regression on the pretrained encoder's frozen sentence vectors: what the encoder knows
    before fine-tuning, so the gap to the fine-tuned model is what fine-tuning adds."""

    features: "object"  # callable: list of texts -> (n, hidden) array
    seed: int = 0

    def fit(self, train: list[Example], val: list[Example], taxonomy: Taxonomy) -> "FrozenFeatureBaseline":
        import warnings

        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        self.model = OneVsRestClassifier(
            LogisticRegression(C=1.0, class_weight="balanced", max_iter=3000, random_state=self.seed)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.model.fit(self.features([ex.text for ex in train]), multi_hot(train, taxonomy))
        self.thresholds = tune_thresholds(multi_hot(val, taxonomy), self.probabilities([ex.text for ex in val]))
        return self

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.predict_proba(self.features(list(texts)))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return (self.probabilities(texts) >= np.asarray(self.thresholds)).astype(np.float32)


def cooccurrence(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Counts of units with true label i that were predicted label j (directions + other)."""
    t, p = with_other(y_true), with_other(y_pred)
    return t.T.astype(int) @ p.astype(int)


def plot_cooccurrence(matrix: np.ndarray, taxonomy: Taxonomy, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label.replace("future_", "") for label in taxonomy.all_labels]
    # Colour = share of each true label's units (row-normalised): `other` has ten times more units
    # than any direction and would otherwise wash out every other row. Cells still print counts.
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title, fontsize=10)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true label's units")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def per_label_table(results: dict[str, dict], taxonomy: Taxonomy) -> str:
    """Markdown table: one row per label, P/R/F1 for each system side by side."""
    systems = list(results)
    header = "| label | support | " + " | ".join(f"{s} P / R / F1" for s in systems) + " |"
    rule = "|---|---:|" + "---|" * len(systems)
    rows = [header, rule]
    for label in taxonomy.all_labels:
        support = results[systems[0]]["per_label"][label]["support"]
        cells = []
        for s in systems:
            m = results[s]["per_label"][label]
            cells.append(f"{m['precision']:.2f} / {m['recall']:.2f} / {m['f1']:.2f}")
        rows.append(f"| {label} | {support} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def bootstrap_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of macro F1 (directions + other, labels present in each resample) over units
    drawn with replacement: how far the figure could move on another test set of the same size."""
    t, p = with_other(y_true).astype(float), with_other(y_pred).astype(float)
    if not len(t):
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(t), len(t)), minlength=len(t)) for _ in range(n_boot)])
    tp, support, predicted = counts @ (t * p), counts @ t, counts @ p
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    present = support > 0
    macro = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    lo, hi = np.quantile(macro, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def summary_table(results: dict[str, dict]) -> str:
    with_ci = all("macro_f1_ci" in m for m in results.values())
    rows = ["| system | micro F1 | macro F1 | " + ("95% interval | " if with_ci else "")
            + "macro F1 (directions) | exact match |",
            "|---|---:|---:|" + ("---:|" if with_ci else "") + "---:|---:|"]
    for name, m in results.items():
        ci = f" {m['macro_f1_ci'][0]:.3f}–{m['macro_f1_ci'][1]:.3f} |" if with_ci else ""
        rows.append(f"| {name} | {m['micro_f1']:.3f} | {m['macro_f1']:.3f} |{ci} {m['macro_f1_directions']:.3f} | "
                    f"{m['exact_match']:.3f} |")
    return "\n".join(rows)


def verdict(results: dict[str, dict], model_key: str, margin: float = 0.02, not_baselines: Sequence[str] = ()) -> str:
    """One plain sentence comparing the model with the strongest baseline (not only the cue dictionary);
    `not_baselines` are systems built on the model itself, which it is not compared with."""
    model = results[model_key]["macro_f1"]
    baselines = {name: r["macro_f1"] for name, r in results.items() if name != model_key and name not in not_baselines}
    best = max(baselines, key=baselines.get)
    others = ", ".join(f"{name} {value:.3f}" for name, value in baselines.items())
    if "macro_f1_ci" in results[model_key] and "macro_f1_ci" in results[best]:
        # A few dozen test units: when the intervals overlap, a verdict would be reading noise.
        (m_lo, m_hi), (b_lo, b_hi) = results[model_key]["macro_f1_ci"], results[best]["macro_f1_ci"]
        if m_lo <= b_hi and b_lo <= m_hi:
            n = results[model_key].get("n", 0)
            return (f"On these {n} test units the model and the strongest baseline, {best}, "
                    "cannot be told apart: their "
                    f"95% intervals overlap (model {model:.3f}, {m_lo:.3f}–{m_hi:.3f}; {best} {baselines[best]:.3f}, "
                    f"{b_lo:.3f}–{b_hi:.3f}; {others}). Compare them with `--cv`.")
    if model >= baselines[best] + margin:
        return f"The model beats every baseline (macro F1 {model:.3f}; {others})."
    if model > baselines[best]:
        return (f"The model is only marginally better than the strongest baseline, {best} (macro F1 {model:.3f}; "
                f"{others}; less than {margin:.2f} ahead).")
    if abs(model - baselines[best]) < 1e-9:
        tied = " and ".join(name for name, value in baselines.items() if abs(value - baselines[best]) < 1e-9)
        return (f"The model ties the strongest baseline{'s' if ' and ' in tied else ''}, {tied} (macro F1 {model:.3f}; "
                f"{others}): no better on this data.")
    return (f"The model does NOT beat the strongest baseline, {best} (macro F1 {model:.3f}; {others}): "
            "it has not earned its cost on this data.")


def mean_std(values: Sequence[float]) -> str:
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.3f} ± {arr.std(ddof=1) if len(arr) > 1 else 0.0:.3f}"
