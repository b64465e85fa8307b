"""runtime.summary: a page's units + predictions -> output records and the page summary."""

from __future__ import annotations

import pytest

from runtime.decide import Prediction
from runtime.summary import DOMINANT_SHARE, MAX_DOMINANT, summarize, unit_records
from runtime.text import Unit, clean, looks_damaged

# Not alphabetical, so "label order" and "alphabetical order" give different answers.
DIRECTIONS = ["energy", "space", "health", "info", "materials", "manufacturing"]
OTHER = "other"
LABELS = [*DIRECTIONS, OTHER]


def preds(*label_sets: list[str]) -> list[Prediction]:
    return [Prediction(list(labels), labels[0], {}) for labels in label_sets]


def test_the_module_constants_these_tests_are_written_for() -> None:
    assert DOMINANT_SHARE == 0.25 and MAX_DOMINANT == 3


def test_units_per_label_counts_every_label_of_a_multi_label_unit() -> None:
    summary = summarize(preds(["space", "info"], ["space"], ["info", "space", "health"], [OTHER], [OTHER]),
                        LABELS, OTHER)
    assert summary["units"] == 5
    assert summary["units_per_label"] == {"energy": 0, "space": 3, "health": 1, "info": 2, "materials": 0,
                                          "manufacturing": 0, OTHER: 2}
    assert list(summary["units_per_label"]) == LABELS  # every label, in taxonomy order
    assert summary["other_share"] == 0.4


def test_other_share_is_rounded_to_four_places() -> None:
    summary = summarize(preds([OTHER], ["energy"], ["energy"]), LABELS, OTHER)
    assert summary["other_share"] == 0.3333


def test_dominant_share_is_of_the_on_topic_units_and_inclusive() -> None:
    # space labels 1 of 4 on-topic units (exactly DOMINANT_SHARE) but 1 of 14 units in all.
    summary = summarize(preds(["energy"], ["energy"], ["energy"], ["space"], *[[OTHER]] * 10), LABELS, OTHER)
    assert summary["dominant_directions"] == ["energy", "space"]
    assert summary["other_share"] == round(10 / 14, 4)
    # One more energy unit: space falls to 1 of 5 (0.2), under the share.
    summary = summarize(preds(*[["energy"]] * 4, ["space"], *[[OTHER]] * 10), LABELS, OTHER)
    assert summary["dominant_directions"] == ["energy"]


def test_dominant_directions_are_capped_ranked_by_count_and_ties_go_by_label_order() -> None:
    # Every direction reaches the share (each unit names several), so only the cap limits the list.
    summary = summarize(preds(["manufacturing", "materials", "info", "health", "space", "energy"],
                              ["manufacturing", "materials", "info", "health"],
                              ["manufacturing", "materials", "info"],
                              ["manufacturing", "materials", "space"]),
                        LABELS, OTHER)
    # manufacturing and materials: 4 each (tie: materials comes first in LABELS); info 3; space 2; ...
    assert summary["units_per_label"]["manufacturing"] == summary["units_per_label"]["materials"] == 4
    assert summary["dominant_directions"] == ["materials", "manufacturing", "info"]
    assert len(summary["dominant_directions"]) == MAX_DOMINANT


def test_ties_follow_the_order_of_the_labels_passed_not_of_the_units() -> None:
    units = preds(["info", "space"], ["space", "info"], ["health"])
    assert summarize(units, LABELS, OTHER)["dominant_directions"] == ["space", "info", "health"]
    reordered = ["info", "health", "space", "energy", "materials", "manufacturing", OTHER]
    assert summarize(units, reordered, OTHER)["dominant_directions"] == ["info", "space", "health"]


def test_without_a_direction_over_the_share_the_most_frequent_one_is_dominant() -> None:
    # Five on-topic units, one direction each: every direction has 1/5 = 0.2 < DOMINANT_SHARE.
    units = preds(["manufacturing"], ["materials"], ["info"], ["health"], ["space"], [OTHER])
    summary = summarize(units, LABELS, OTHER)
    assert summary["dominant_directions"] == ["space"]  # a tie of ones: the first in label order
    # A clear most frequent one below the share wins over label order: info labels 3 of 13 units (0.23),
    # every other direction 2.
    units = preds(*[["info"]] * 3, *[[d] for d in DIRECTIONS if d != "info"] * 2)
    summary = summarize(units, LABELS, OTHER)
    assert summary["units"] == 13 and summary["units_per_label"]["info"] == 3
    assert summary["dominant_directions"] == ["info"]


def test_a_page_of_only_other_units_has_no_dominant_direction() -> None:
    summary = summarize(preds([OTHER], [OTHER]), LABELS, OTHER)
    assert summary == {"units": 2, "units_per_label": {**{d: 0 for d in DIRECTIONS}, OTHER: 2},
                       "other_share": 1.0, "dominant_directions": []}


def test_an_empty_page() -> None:
    summary = summarize([], LABELS, OTHER)
    assert summary == {"units": 0, "units_per_label": {label: 0 for label in LABELS}, "other_share": 0.0,
                       "dominant_directions": []}


DAMAGED = "锟斤拷锟斤拷锟斤拷"  # the classic mojibake of U+FFFD bytes read as GBK: 3 rare characters of 9


def test_unit_records_merge_unit_and_prediction_and_flag_damaged_text() -> None:
    texts = [clean(DAMAGED), clean("推动氢能全产业链协同发展"), clean("锟斤拷")]
    # The flag is looks_damaged's: a run of rare characters is damaged; a single one (under
    # DAMAGE_MIN_CHARS suspicious characters) is not, however high its share.
    assert [looks_damaged(t) for t in texts] == [True, False, False]
    units = [Unit(0, 0, 9, texts[0]), Unit(1, 10, 22, texts[1]), Unit(2, 23, 26, texts[2])]
    predictions = [Prediction([OTHER], OTHER, {"energy": 0.1, OTHER: 0.9}),
                   Prediction(["energy"], "energy", {"energy": 0.8, OTHER: 0.2}, truncated=True),
                   Prediction([OTHER], OTHER, {"energy": 0.0, OTHER: 1.0})]
    records = unit_records(units, predictions)
    assert records[0] == {"index": 0, "start": 0, "end": 9, "text": DAMAGED, "labels": [OTHER], "top_label": OTHER,
                          "scores": {"energy": 0.1, OTHER: 0.9}, "truncated": False, "damaged": True}
    assert records[1] == {"index": 1, "start": 10, "end": 22, "text": "推动氢能全产业链协同发展", "labels": ["energy"],
                          "top_label": "energy", "scores": {"energy": 0.8, OTHER: 0.2}, "truncated": True,
                          "damaged": False}
    assert records[2]["damaged"] is False


@pytest.mark.parametrize("text, damaged", [("¹ú¼Ò·¢Õ¹", True), ("宝钛集团大规格钛合金铸锭熔炼能力居全国首位", False)])
def test_unit_records_flag_follows_looks_damaged(text: str, damaged: bool) -> None:
    (record,) = unit_records([Unit(0, 0, len(text), clean(text))], preds([OTHER]))
    assert record["damaged"] is damaged
