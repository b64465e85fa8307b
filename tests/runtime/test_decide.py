"""runtime.decide: probabilities -> label sets (thresholds, the `other` rule) and back to a 0/1 matrix."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.decide import Prediction, decide, label_matrix

DIRECTIONS = ["a", "b", "c"]
OTHER = "other"


def test_a_row_with_no_direction_over_its_threshold_is_other() -> None:
    (pred,) = decide(np.array([[0.2, 0.49, 0.1]]), DIRECTIONS, [0.5, 0.5, 0.5], OTHER)
    assert pred.labels == [OTHER] and pred.top_label == OTHER
    # other's score is 1 - the strongest direction, every direction keeps its own probability.
    assert pred.scores == pytest.approx({"a": 0.2, "b": 0.49, "c": 0.1, OTHER: 0.51}, abs=1e-9)
    assert list(pred.scores) == [*DIRECTIONS, OTHER]
    assert pred.truncated is False


def test_other_score_is_one_minus_the_highest_probability_even_when_a_direction_passes() -> None:
    (pred,) = decide(np.array([[0.9, 0.3, 0.05]]), DIRECTIONS, [0.5, 0.5, 0.5], OTHER)
    assert pred.labels == ["a"] and pred.top_label == "a"
    assert pred.scores[OTHER] == pytest.approx(0.1, abs=1e-9)
    assert OTHER not in pred.labels


def test_several_passing_directions_are_ordered_strongest_first() -> None:
    probs = np.array([[0.6, 0.95, 0.7],
                      [0.81, 0.55, 0.93]])
    first, second = decide(probs, DIRECTIONS, [0.5, 0.5, 0.5], OTHER)
    assert first.labels == ["b", "c", "a"] and first.top_label == "b"
    assert second.labels == ["c", "a", "b"] and second.top_label == "c"
    assert first.scores[OTHER] == pytest.approx(0.05, abs=1e-9)
    assert second.scores[OTHER] == pytest.approx(0.07, abs=1e-9)


def test_per_direction_thresholds_are_honoured_and_equal_passes() -> None:
    thresholds = [0.3, 0.6, 0.9]
    probs = np.array([
        [0.3, 0.59, 0.2],   # a exactly at its threshold passes; b just under does not
        [0.29, 0.6, 0.89],  # b exactly at its threshold passes
        [0.1, 0.2, 0.9],    # c exactly at its (high) threshold passes
        [0.29, 0.59, 0.89],  # every direction just under: other
        [0.35, 0.65, 0.5],  # the same probability 0.5 fails c's 0.9 but 0.35 passes a's 0.3
    ])
    preds = decide(probs, DIRECTIONS, thresholds, OTHER)
    assert [p.labels for p in preds] == [["a"], ["b"], ["c"], [OTHER], ["b", "a"]]
    # The same rows under one flat 0.5: a different answer, so the per-direction values did matter.
    flat = decide(probs, DIRECTIONS, [0.5] * 3, OTHER)
    assert [p.labels for p in flat] == [["b"], ["c", "b"], ["c"], ["c", "b"], ["b", "c"]]


def test_float32_probabilities_at_a_threshold_pass() -> None:
    # Models return float32; 0.5 is exact in float32, so a probability of 0.5 is at the threshold.
    (pred,) = decide(np.array([[0.5, 0.1, 0.1]], dtype=np.float32), DIRECTIONS, [0.5, 0.5, 0.5], OTHER)
    assert pred.labels == ["a"]


def test_scores_are_rounded_to_six_places() -> None:
    (pred,) = decide(np.array([[0.123456789, 0.9876543219, 0.0]]), DIRECTIONS, [0.5] * 3, OTHER)
    assert pred.scores == {"a": 0.123457, "b": 0.987654, "c": 0.0, OTHER: 0.012346}


def test_no_rows_give_no_predictions() -> None:
    assert decide(np.zeros((0, 3)), DIRECTIONS, [0.5] * 3, OTHER) == []
    assert label_matrix([], DIRECTIONS).shape == (0, 3)


def test_label_matrix_round_trips_decide() -> None:
    thresholds = [0.4, 0.5, 0.6]
    rng = np.random.default_rng(7)
    probs = rng.random((50, 3))
    preds = decide(probs, DIRECTIONS, thresholds, OTHER)
    y = label_matrix(preds, DIRECTIONS)
    assert y.shape == (50, 3) and y.dtype == np.float32
    # Exactly the cells at or over their thresholds, and `other` rows are all zero.
    np.testing.assert_array_equal(y, (probs >= np.asarray(thresholds)).astype(np.float32))
    others = [i for i, p in enumerate(preds) if p.labels == [OTHER]]
    assert others, "the random rows should include some that pass nothing"
    assert not y[others].any()
    # Back to label sets: the same sets as decide's (order aside).
    for row, pred in zip(y, preds):
        labels = [d for d, bit in zip(DIRECTIONS, row) if bit]
        assert set(labels or [OTHER]) == set(pred.labels)


def test_label_matrix_ignores_labels_outside_the_directions() -> None:
    preds = [Prediction(["c", "a"], "c", {}), Prediction([OTHER], OTHER, {}), Prediction(["b", "unknown"], "b", {})]
    np.testing.assert_array_equal(label_matrix(preds, DIRECTIONS), [[1, 0, 1], [0, 0, 0], [0, 1, 0]])


def test_to_dict_carries_every_field() -> None:
    pred = Prediction(["a"], "a", {"a": 0.9, OTHER: 0.1}, truncated=True)
    assert pred.to_dict() == {"labels": ["a"], "top_label": "a", "scores": {"a": 0.9, OTHER: 0.1}, "truncated": True}
