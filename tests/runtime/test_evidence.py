"""Evidence spans: exact for the TF-IDF half, Integrated Gradients for the encoder, offsets into the cleaned text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.decide import Prediction
from runtime.evidence import EvidenceError, EvidenceSettings, Explainer, lexical_contributions, spans_from_weights
from runtime.text import clean
from tests.evidence_models import DIRECTIONS, fit_lexical, tiny_classifier

E5 = Path("artifacts/offline-e5-small")
NEUTRAL = "会议要求各部门压实责任,确保各项任务按期落地见效。"
CUE = "氢能"
WITH_CUE = "会议要求各部门压实责任,加快" + CUE + "示范应用,确保各项任务按期落地见效。"


@pytest.fixture(scope="module")
def lexical():
    return fit_lexical()


@pytest.fixture(scope="module")
def tiny(lexical):
    return tiny_classifier(lexical)


def test_tfidf_contributions_add_up_to_its_logit(lexical) -> None:
    for text in [WITH_CUE, clean("發展氫能產(chǎn)業(yè) AI  芯片 İstanbul"), "a"]:
        parts = lexical_contributions(lexical, text)
        assert parts.shape == (len(text), len(DIRECTIONS))
        p = lexical.probabilities([text])[0].astype(np.float64)
        logit = np.log(p / (1 - p))
        assert parts.sum(axis=0) + lexical.intercept == pytest.approx(logit, abs=1e-4)


def test_the_tfidf_evidence_for_energy_is_the_inserted_cue(lexical) -> None:
    energy = DIRECTIONS.index("future_energy")
    neutral = lexical.probabilities([NEUTRAL])[0, energy]
    cued = lexical.probabilities([WITH_CUE])[0, energy]
    assert cued > neutral + 0.2  # the cue is what moves the direction
    weights = np.clip(lexical_contributions(lexical, WITH_CUE)[:, energy], 0, None)
    spans = spans_from_weights(WITH_CUE, weights / weights.sum(), EvidenceSettings())
    cue = (WITH_CUE.index(CUE), WITH_CUE.index(CUE) + len(CUE))
    assert spans and spans[0].start < cue[1] and spans[0].end > cue[0], spans


def test_spans_are_merged_runs_strongest_first_cut_to_top_k_and_min_weight() -> None:
    text = "ab cdefgh"
    weights = np.array([0.3, 0.2, 0.25, 0.0, 0.05, 0.1, 0.0, 0.08, 0.02])
    spans = spans_from_weights(text, weights, EvidenceSettings(top_k=2, min_weight=0.05, char_floor=0.25))
    # 'ab' (0.5) first; the space inside the run is trimmed off the span's edge; 'e' alone (0.1 >= 0.075); 'g'
    # (0.08) would be third.
    assert [(s.start, s.end, s.text, s.weight) for s in spans] == [(0, 2, "ab", 0.5), (5, 6, "e", 0.1)]
    assert spans_from_weights(text, np.zeros(len(text)), EvidenceSettings()) == []
    with pytest.raises(ValueError):
        EvidenceSettings(top_k=0)


@pytest.mark.parametrize("raw", [
    # traditional script with pinyin glosses
    "支持高校院所與企業共建類腦芯片聯合實驗室,推動氫能產(chǎn)業(yè)發(fā)展。",
    "　全角ＡＩ芯片\u200b和  氢能   燃料电池 ",  # full-width forms, an invisible character, runs of spaces
    WITH_CUE,
])
def test_offsets_index_the_cleaned_text(tiny, raw) -> None:
    text = clean(raw)
    explainer = Explainer(tiny, EvidenceSettings(top_k=5, min_weight=0.0))
    # Every direction asked for, so both halves are attributed whatever the random encoder predicts.
    pred = Prediction(list(DIRECTIONS), DIRECTIONS[0], {d: 0.6 for d in DIRECTIONS} | {"other": 0.4})
    evidence = explainer.explain([text], [pred])[0]
    assert set(evidence) == set(DIRECTIONS)
    for spans in evidence.values():
        assert spans, evidence
        weights = [s["weight"] for s in spans]
        assert weights == sorted(weights, reverse=True) and all(0 < w <= 1 for w in weights)
        for span in spans:
            assert text[span["start"]:span["end"]] == span["text"] and span["text"].strip() == span["text"]
            assert "query" not in span["text"]


def test_only_predicted_directions_are_explained(tiny) -> None:
    other = Prediction(["other"], "other", {d: 0.1 for d in DIRECTIONS} | {"other": 0.9})
    one = Prediction(["future_energy"], "future_energy", {d: 0.1 for d in DIRECTIONS} | {"future_energy": 0.7})
    assert Explainer(tiny).explain(["版权所有", WITH_CUE], [other, one])[0] == {}
    assert list(Explainer(tiny).explain(["版权所有", WITH_CUE], [other, one])[1]) == ["future_energy"]


def test_the_encoder_reads_the_ids_it_scores_and_integrated_gradients_complete(tiny) -> None:
    texts = [WITH_CUE, clean("發展氫能產(chǎn)業(yè)")]
    explainer = Explainer(tiny, EvidenceSettings(n_steps=64))
    per_char = explainer.encoder_contributions(texts, [(0, 3), (1, 3)])
    assert [len(row) for row in per_char] == [len(t) for t in texts]
    # Attributions sum to the logit's change from the padded baseline: the gap (completeness) is small.
    assert max(explainer.last_deltas) < 1e-2
    ids, _ = tiny.encode(texts)
    enc = tiny.tokenizer([tiny.text_prefix + t for t in texts], truncation=True, max_length=tiny.max_length)
    assert enc["input_ids"] == ids


def test_a_classifier_without_torch_weights_is_refused(tiny) -> None:
    import copy

    released = copy.copy(tiny)
    released._released_from = tiny.device
    pred = Prediction(["future_energy"], "future_energy", {d: 0.7 for d in DIRECTIONS} | {"other": 0.3})
    with pytest.raises(EvidenceError, match="torch precision"):
        Explainer(released).explain([WITH_CUE], [pred])


@pytest.mark.slow
@pytest.mark.skipif(not (E5 / "artifact.json").is_file(), reason=f"no trained {E5}")
def test_the_served_model_points_at_the_inserted_energy_cue() -> None:
    from runtime.classifier import Classifier

    classifier = Classifier.from_artifact(E5, precision="fp32", device="cpu")
    neutral, cued = classifier.predict([NEUTRAL, WITH_CUE], already_clean=True)
    assert "future_energy" not in neutral.labels and "future_energy" in cued.labels
    evidence = Explainer(classifier).explain([WITH_CUE], [cued])[0]["future_energy"]
    start = WITH_CUE.index(CUE)
    assert evidence[0]["start"] < start + len(CUE) and evidence[0]["end"] > start, evidence
