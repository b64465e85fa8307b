"""training.evaluate: threshold tuning on hand-built matrices whose best threshold is known, and the metrics
against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.taxonomy import Taxonomy
from training.evaluate import (
    THRESHOLD_GRID,
    bootstrap_macro_f1,
    choose_thresholds,
    cooccurrence,
    macro_average_precision,
    metrics,
    tune_global_threshold,
    tune_thresholds,
    with_other,
)

TAXONOMY = Taxonomy(directions=("a", "b", "c"), other="other", names={}, cues={})


def column(positives: list[float], negatives: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """One direction's (labels, probabilities): positives first."""
    y = np.array([1] * len(positives) + [0] * len(negatives), dtype=np.float32)
    return y, np.array(positives + negatives, dtype=np.float64)


def matrix(*columns: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([c[0] for c in columns], axis=1), np.stack([c[1] for c in columns], axis=1)


# ----------------------------------------------------------------------------- the grid


def test_threshold_grid_is_005_to_095_in_steps_of_005() -> None:
    assert THRESHOLD_GRID.tolist() == [round(0.05 * k, 2) for k in range(1, 20)]


# ----------------------------------------------------------------------------- per direction


def test_per_direction_threshold_is_the_only_grid_value_that_separates_the_classes() -> None:
    # Perfect F1 only for t in (0.2, 0.25]: 0.25 is the one grid value, and a probability equal to it passes.
    y, p = column([0.25, 0.4, 0.9], [0.05, 0.1, 0.2])
    assert tune_thresholds(y[:, None], p[:, None]) == [0.25]
    # Perfect only for t in (0.85, 0.9].
    y, p = column([0.9, 0.95], [0.85, 0.6, 0.1])
    assert tune_thresholds(y[:, None], p[:, None]) == [0.9]


def test_per_direction_ties_go_to_the_grid_value_closest_to_half() -> None:
    # Perfect for every t in (0.3, 0.7]: 0.35 ... 0.7 tie, 0.5 is chosen.
    y, p = column([0.7, 0.8, 0.9], [0.1, 0.2, 0.3])
    assert tune_thresholds(y[:, None], p[:, None]) == [0.5]
    # Perfect for t in (0.55, 0.8]: 0.6 is the closest to 0.5 of the tied values.
    y, p = column([0.8, 0.85], [0.55, 0.2])
    assert tune_thresholds(y[:, None], p[:, None]) == [0.6]


def test_per_direction_threshold_maximises_f1_when_no_threshold_is_perfect() -> None:
    # positives 0.8 and 0.3, a negative at 0.6:
    #   t <= 0.3       -> TP 2, FP 1        F1 = 4/5   (best)
    #   0.3 < t <= 0.6 -> TP 1, FP 1, FN 1  F1 = 1/2
    #   0.6 < t <= 0.8 -> TP 1, FN 1        F1 = 2/3
    # The tied best values are 0.05 ... 0.3; the closest to 0.5 is 0.3.
    y, p = column([0.8, 0.3], [0.6])
    assert tune_thresholds(y[:, None], p[:, None]) == [0.3]


def test_each_direction_is_tuned_on_its_own_and_an_empty_one_keeps_the_default() -> None:
    y, p = matrix(column([0.25, 0.4, 0.9, 0.95], [0.05, 0.1, 0.2, 0.15]),
                  column([0.9, 0.95, 0.93, 0.97], [0.85, 0.6, 0.1, 0.2]),
                  column([], [0.9, 0.8, 0.1, 0.6, 0.3, 0.2, 0.5, 0.7]))  # no positive in validation
    thresholds = tune_thresholds(y, p)
    assert thresholds == [0.25, 0.9, 0.5]
    assert all(type(t) is float for t in thresholds)  # plain floats: they go into artifact.json
    assert tune_thresholds(y, p, default=0.7) == [0.25, 0.9, 0.7]


# ----------------------------------------------------------------------------- one global threshold


def test_global_threshold_maximises_macro_f1_over_the_directions() -> None:
    # a is perfect for t in (0.3, 0.7], b for t in (0.6, 0.8]: both only for t in (0.6, 0.7] -> 0.65 and 0.7 tie,
    # and 0.65 is the closer to the default 0.5. Per direction they would be 0.5 and 0.65.
    y, p = matrix(column([0.7, 0.8, 0.9], [0.1, 0.2, 0.3]), column([0.8, 0.85, 0.9], [0.6, 0.2, 0.1]))
    assert tune_global_threshold(y, p) == 0.65
    assert tune_thresholds(y, p) == [0.5, 0.65]
    # The default is also the tie-break's target.
    assert tune_global_threshold(y, p, default=0.9) == 0.7


def test_global_threshold_trades_one_direction_against_another() -> None:
    # a is perfect only for t in (0.2, 0.3], b only for t in (0.6, 0.9]; no t suits both:
    #   t in (0.2, 0.3]: a 1, b TP 2 FP 2 (0.6, 0.35) -> 2/3   macro 5/6  (best)
    #   t = 0.35:        a 0, b TP 2 FP 2             -> 2/3   macro 1/3
    #   t in (0.6, 0.9]: a 0, b 1                               macro 1/2
    y, p = matrix(column([0.3, 0.3], [0.1, 0.05, 0.2, 0.1]), column([0.9, 0.95], [0.6, 0.35, 0.1, 0.2]))
    assert tune_global_threshold(y, p) == 0.3
    assert tune_thresholds(y, p) == [0.3, 0.65]


def test_global_threshold_without_any_positive_is_the_default() -> None:
    y, p = matrix(column([], [0.9, 0.1]), column([], [0.4, 0.6]))
    assert tune_global_threshold(y, p) == 0.5
    assert tune_global_threshold(y, p, default=0.35) == 0.35


# ----------------------------------------------------------------------------- the rules


def test_choose_thresholds_by_rule() -> None:
    y, p = matrix(column([0.7, 0.8, 0.9], [0.1, 0.2, 0.3]), column([0.8, 0.85, 0.9], [0.6, 0.2, 0.1]))
    assert choose_thresholds("validation", y, p) == [0.5, 0.65]
    assert choose_thresholds("global", y, p) == [0.65, 0.65]
    assert choose_thresholds("flat", y, p) == [0.5, 0.5]
    with pytest.raises(ValueError, match="unknown threshold rule 'best'"):
        choose_thresholds("best", y, p)


def test_every_rule_in_the_config_is_known_to_choose_thresholds() -> None:
    from training.config import THRESHOLD_RULES

    y, p = column([0.7, 0.8], [0.1, 0.2])
    for rule in THRESHOLD_RULES:
        assert len(choose_thresholds(rule, y[:, None], p[:, None])) == 1


# ----------------------------------------------------------------------------- metrics

# Five units, directions a, b, c (c never occurs) + other:
#   true: a | a,b | other | b | other
#   pred: a | a   | b     | b | other
Y_TRUE = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
Y_PRED = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)


def test_with_other_adds_the_no_direction_column() -> None:
    np.testing.assert_array_equal(with_other(Y_TRUE)[:, -1], [0, 0, 1, 0, 1])
    np.testing.assert_array_equal(with_other(Y_PRED)[:, -1], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(with_other(Y_TRUE)[:, :3], Y_TRUE)


def test_metrics_match_a_hand_count() -> None:
    m = metrics(Y_TRUE, Y_PRED, TAXONOMY)
    # a: TP 2                -> P 1, R 1, F1 1
    # b: TP 1, FP 1, FN 1    -> P 1/2, R 1/2, F1 1/2
    # c: never true nor predicted: support 0, F1 0
    # other: TP 1, FN 1      -> P 1, R 1/2, F1 2/3
    expected = {"a": (1, 1, 1, 2), "b": (0.5, 0.5, 0.5, 2), "c": (0, 0, 0, 0), "other": (1, 0.5, 2 / 3, 2)}
    assert list(m["per_label"]) == ["a", "b", "c", "other"]
    for label, (precision, recall, f1, support) in expected.items():
        got = m["per_label"][label]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((precision, recall, f1)), label
        assert got["support"] == support, label
    # Macro over the labels present in the test set (c is left out): (1 + 1/2 + 2/3) / 3.
    assert m["macro_f1"] == pytest.approx(13 / 18)
    assert m["macro_f1_directions"] == pytest.approx(3 / 4)
    # Micro: TP 4, FP 1, FN 2 -> 2*4 / (2*4 + 1 + 2).
    assert m["micro_f1"] == pytest.approx(8 / 11)
    # Exact match of the whole label set (other included): units 1, 4 and 5.
    assert m["exact_match"] == pytest.approx(3 / 5)
    assert m["n"] == 5


def test_a_false_positive_on_a_label_absent_from_the_test_set_costs_micro_not_macro() -> None:
    pred = Y_PRED.copy()
    pred[4, 2] = 1  # the last unit, true other, predicted c instead
    m = metrics(Y_TRUE, pred, TAXONOMY)
    # other loses its one TP: F1 0; c is still absent from the truth and still left out of macro.
    assert m["per_label"]["other"]["f1"] == 0 and m["per_label"]["c"]["support"] == 0
    assert m["macro_f1"] == pytest.approx((1 + 0.5 + 0) / 3)
    # Micro: TP 3, FP 2 (b, c), FN 3 (b, other, other) -> 6 / 11.
    assert m["micro_f1"] == pytest.approx(6 / 11)
    assert m["exact_match"] == pytest.approx(2 / 5)


def test_perfect_predictions_score_one_everywhere() -> None:
    m = metrics(Y_TRUE, Y_TRUE, TAXONOMY)
    assert m["macro_f1"] == m["micro_f1"] == m["exact_match"] == m["macro_f1_directions"] == 1.0


def test_nothing_present_gives_zero_macro_not_nan() -> None:
    # Only `other` units, all predicted as some direction: no direction is present in the truth.
    m = metrics(np.zeros((2, 3)), np.array([[1, 0, 0], [0, 1, 0]]), TAXONOMY)
    assert m["macro_f1_directions"] == 0.0 and m["macro_f1"] == 0.0


def test_cooccurrence_counts_true_against_predicted_labels() -> None:
    # Rows: true a, b, c, other; columns: predicted a, b, c, other.
    np.testing.assert_array_equal(cooccurrence(Y_TRUE, Y_PRED), [[2, 0, 0, 0],
                                                                 [1, 1, 0, 0],
                                                                 [0, 0, 0, 0],
                                                                 [0, 1, 0, 1]])


def test_macro_average_precision_by_hand() -> None:
    # Column 0: ranked 0.9 (pos), 0.8 (neg), 0.4 (pos), 0.1 (neg): AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    # Column 1: positives ranked first: AP 1. Column 2: no positive, left out.
    y = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    probs = np.array([[0.9, 0.7, 0.2], [0.8, 0.1, 0.9], [0.4, 0.3, 0.5], [0.1, 0.2, 0.3]])
    assert macro_average_precision(y, probs) == pytest.approx((5 / 6 + 1) / 2)
    assert macro_average_precision(np.zeros((3, 2)), np.ones((3, 2))) == 0.0


def test_bootstrap_interval_of_perfect_predictions_is_a_point_and_seeded() -> None:
    assert bootstrap_macro_f1(Y_TRUE, Y_TRUE, n_boot=200) == (1.0, 1.0)
    first = bootstrap_macro_f1(Y_TRUE, Y_PRED, n_boot=500, seed=3)
    assert first == bootstrap_macro_f1(Y_TRUE, Y_PRED, n_boot=500, seed=3)
    lo, hi = first
    assert lo < metrics(Y_TRUE, Y_PRED, TAXONOMY)["macro_f1"] < hi
    assert bootstrap_macro_f1(np.zeros((0, 3)), np.zeros((0, 3))) == (0.0, 0.0)
