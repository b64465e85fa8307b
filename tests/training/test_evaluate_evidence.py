"""ERASER faithfulness: the perturbations it scores, the random spans it compares with, and one run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.evidence_models import fit_lexical, tiny_classifier
from training.evaluate_evidence import delete_spans, measure, only_spans, random_spans


def test_deleting_and_keeping_spans() -> None:
    assert delete_spans("abcdefg", [(4, 6), (1, 2)]) == "acdg"
    assert only_spans("abcdefg", [(4, 6), (1, 2)]) == "bef"
    assert delete_spans("abc", []) == "abc" and only_spans("abc", []) == ""


def test_random_spans_have_the_lengths_asked_for_never_overlap_and_cover_every_place() -> None:
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(3000):
        spans = random_spans(10, [3, 1, 2], rng)
        assert sorted(end - start for start, end in spans) == [1, 2, 3]
        ordered = sorted(spans)
        assert ordered[0][0] >= 0 and ordered[-1][1] <= 10
        assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:]))
        starts |= {start for start, end in spans if end - start == 3}
    assert starts == set(range(8))  # the 3-long span lands at every place it fits
    assert random_spans(5, [], rng) == []
    assert random_spans(3, [3], rng) == [(0, 3)]
    with pytest.raises(ValueError):
        random_spans(2, [3], rng)


def test_measure_scores_each_predicted_direction_against_random_spans(tmp_path) -> None:
    classifier = tiny_classifier(fit_lexical())
    texts = ["加快建设氢能制储运加用一体化示范区,推动燃料电池重卡批量应用。", "会议要求各部门压实责任。",
             "发展锂电池储能和光伏发电产业。"]
    result = measure(classifier, texts, repeats=3, seed=1)
    summary, rows = result["summary"], result["rows"]
    assert rows and any(r["spans"] for r in rows)
    predictions = classifier.predict(texts, already_clean=True)
    assert summary["unit_directions"] == len(rows) == sum(len(p.labels) for p in predictions if p.labels != ["other"])
    for row in rows:
        assert row["direction"] in predictions[row["unit"]].labels
        for key in ("comprehensiveness", "sufficiency", "random_comprehensiveness", "random_sufficiency"):
            assert -1 <= row[key] <= 1
    assert summary["comprehensiveness"] == pytest.approx(np.mean([r["comprehensiveness"] for r in rows]))
    assert json.dumps(result, ensure_ascii=False)  # the result file is plain JSON
    assert measure(classifier, texts, repeats=3, seed=1)["summary"]["random_comprehensiveness"] == \
        summary["random_comprehensiveness"]  # seeded
