"""Held-out real units: whole pages by default, authored units never tested, and the threshold rules."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.taxonomy import load_taxonomy
from training.config import ConfigError, load_config
from training.data import Example, holdout_pages, kfold_indices, load_examples, make_splits, page_groups
from training.evaluate import choose_thresholds, decision_table, tune_global_threshold

ENERGY, SPACE, OTHER = ("future_energy",), ("future_space",), ("other",)


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy("labels/taxonomy.yaml")


def page(name: str, n: int, labels=OTHER, start: int = 0) -> list[Example]:
    return [Example(f"{name} 第{i}句", labels, "seed", f"{name}:{i}", name) for i in range(start, start + n)]


def pages_of(examples: list[Example], idx) -> set[str]:
    return {examples[i].page for i in idx}


def test_page_groups_keep_a_page_together_and_group_pageless_units_by_text() -> None:
    units = [*page("a", 3), *page("b", 2),
             Example("无页", OTHER, "user", "x:1"), Example("无页", OTHER, "user", "x:2"),
             Example("另一句", OTHER, "user", "x:3")]
    groups = page_groups(units)
    assert len(set(groups[:3])) == 1 and len(set(groups[3:5])) == 1 and groups[0] != groups[3]
    assert groups[5] == groups[6] != groups[7]


def test_few_pages_give_leave_one_page_out(taxonomy) -> None:
    units = [*page("a", 5, ENERGY), *page("b", 4), *page("c", 6, SPACE)]
    folds = kfold_indices(units, taxonomy, k=5, seed=0)
    assert len(folds) == 3
    assert sorted(len(pages_of(units, f)) for f in folds) == [1, 1, 1]
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(units)))


def test_many_pages_fill_k_folds_of_whole_pages_with_labels_spread(taxonomy) -> None:
    units: list[Example] = []
    for p in range(12):
        units += page(f"p{p}", 3 + p % 4, ENERGY if p % 3 == 0 else SPACE if p % 3 == 1 else OTHER)
    folds = kfold_indices(units, taxonomy, k=3, seed=7)
    assert len(folds) == 3
    seen: set[str] = set()
    for fold in folds:
        names = pages_of(units, fold)
        assert not names & seen  # no page in two folds
        seen |= names
        # every page in the fold is whole
        assert all(sum(ex.page == name for ex in units) == sum(units[i].page == name for i in fold) for name in names)
        labels = {label for i in fold for label in units[i].labels}
        assert {"future_energy", "future_space", "other"} <= labels  # four pages of each kind: one or two per fold
    assert len(seen) == 12
    assert [f.tolist() for f in folds] == [f.tolist() for f in kfold_indices(units, taxonomy, k=3, seed=7)]


def test_unit_folds_split_pages(taxonomy) -> None:
    units = [*page("a", 10, ENERGY), *page("b", 10)]
    folds = kfold_indices(units, taxonomy, k=2, seed=0, by="unit")
    assert all(len(pages_of(units, f)) == 2 for f in folds)


def test_single_split_holds_out_whole_pages_and_only_real_units(taxonomy) -> None:
    real = [*page("a", 8, ENERGY), *page("b", 8, SPACE), *page("c", 6, OTHER), *page("d", 9, ENERGY)]
    real += page("e", 3, SPACE, start=8)  # page e: space and other units
    real += page("e", 4, OTHER, start=20)
    authored = [Example(f"作者句{i}", ENERGY if i % 2 else OTHER, "authored", f"au:{i}") for i in range(40)]
    splits = make_splits(real, authored, taxonomy, None, 0.15, 0.15, 0.1, seed=3)
    test_pages = {ex.page for ex in splits.test}
    assert all(ex.source == "seed" for ex in splits.test)
    assert not test_pages & {ex.page for ex in splits.train + splits.val if ex.source == "seed"}
    for name in test_pages:
        assert sum(ex.page == name for ex in splits.test) == sum(ex.page == name for ex in real)
    # Every page but c holds one direction; of those, e (7 units) is closest to 15% of 38.
    assert test_pages == {"e"}
    rest, held = holdout_pages(real, taxonomy, 0.15, seed=3)
    assert sorted([*rest, *held]) == list(range(len(real)))


def test_one_page_cannot_be_held_out(taxonomy) -> None:
    with pytest.raises(ConfigError, match="1 page"):
        kfold_indices(page("a", 10, ENERGY), taxonomy, k=2, seed=0)


def test_seed_units_carry_their_page(taxonomy) -> None:
    examples = load_examples(["labels/seed_units.jsonl"], taxonomy)
    assert all(ex.page for ex in examples)
    folds = kfold_indices(examples, taxonomy, k=5, seed=42)
    assert len(folds) == len({ex.page for ex in examples})
    assert all(len(pages_of(examples, f)) == 1 for f in folds)


def test_split_by_is_checked() -> None:
    with pytest.raises(ConfigError, match="data.split_by"):
        load_config("configs/offline-small.yaml", ["data.split_by=site"])
    with pytest.raises(ConfigError, match="train.threshold_rule"):
        load_config("configs/offline-small.yaml", ["train.threshold_rule=best"])


def test_threshold_rules() -> None:
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    probs = np.array([[0.3, 0.1], [0.35, 0.2], [0.1, 0.9], [0.2, 0.1]])
    assert choose_thresholds("flat", y, probs) == [0.5, 0.5]
    per_direction = choose_thresholds("validation", y, probs)  # best F1 on 0.25 and 0.3: the one nearer 0.5
    assert per_direction[0] == pytest.approx(0.3) and 0.2 < per_direction[1] <= 0.9
    shared = choose_thresholds("global", y, probs)
    assert shared[0] == shared[1] == tune_global_threshold(y, probs)
    # One shared threshold must catch the first direction (0.3, 0.35) without taking unit 4 (0.2).
    assert 0.2 < shared[0] <= 0.3
    with pytest.raises(ValueError):
        choose_thresholds("best", y, probs)


def test_decision_table_scores_each_rule_on_each_fold(taxonomy) -> None:
    rng = np.random.default_rng(0)

    def fold(n: int) -> dict:
        y = (rng.random((n, 6)) < 0.2).astype(np.float32)
        encoder = np.clip(y * 0.35 + rng.random((n, 6)) * 0.3, 0, 1)  # positives 0.35-0.65: flat 0.5 misses half
        tfidf = np.clip(y * 0.6 + rng.random((n, 6)) * 0.3, 0, 1)  # positives 0.6-0.9: always found
        return {"y_test": y, "y_val": y, "encoder_test": encoder, "encoder_val": encoder,
                "tfidf_test": tfidf, "tfidf_val": tfidf}

    table = decision_table([fold(40), fold(40), fold(40)], taxonomy)
    assert set(table) == {"encoder alone", "encoder + tfidf mean"}
    for by_rule in table.values():
        assert set(by_rule) == {"validation", "global", "flat", "real out-of-fold"}
        assert all(len(v) == 3 for v in by_rule.values())
    # Thresholds tuned on the same units separate them perfectly; 0.5 misses the encoder's low positives.
    assert np.mean(table["encoder alone"]["validation"]) == pytest.approx(1.0)
    assert np.mean(table["encoder alone"]["flat"]) < 0.95
    assert np.mean(table["encoder + tfidf mean"]["flat"]) > np.mean(table["encoder alone"]["flat"])


def test_bootstrap_interval_brackets_the_figure_and_narrows_with_more_units() -> None:
    from training.evaluate import bootstrap_macro_f1

    rng = np.random.default_rng(1)
    y = (rng.random((40, 6)) < 0.2).astype(np.float32)
    assert bootstrap_macro_f1(y, y) == (1.0, 1.0)
    noisy = np.where(rng.random(y.shape) < 0.1, 1 - y, y)
    lo, hi = bootstrap_macro_f1(y, noisy)
    from training.evaluate import metrics

    taxonomy = load_taxonomy("labels/taxonomy.yaml")
    assert lo < metrics(y, noisy, taxonomy)["macro_f1"] < hi
    big_y, big_noisy = np.tile(y, (10, 1)), np.tile(noisy, (10, 1))
    big_lo, big_hi = bootstrap_macro_f1(big_y, big_noisy)
    assert big_hi - big_lo < (hi - lo) / 2


def test_verdict_says_so_when_intervals_overlap() -> None:
    from training.evaluate import verdict

    results = {"model": {"macro_f1": 0.95, "macro_f1_ci": [0.85, 1.0], "n": 31},
               "tfidf": {"macro_f1": 0.90, "macro_f1_ci": [0.80, 0.97]},
               "rules": {"macro_f1": 0.80, "macro_f1_ci": [0.70, 0.88]}}
    text = verdict(results, "model")
    assert "cannot be told apart" in text and "31 test units" in text and "tfidf" in text
    results["tfidf"]["macro_f1_ci"] = [0.70, 0.84]
    assert verdict(results, "model").startswith("The model beats every baseline")
