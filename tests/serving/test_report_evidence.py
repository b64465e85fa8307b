"""The crawl report highlights the evidence of the strongest units, escaped like every other text."""

from __future__ import annotations

import json

from serving.report import highlight, write_report


def _unit(index: int, text: str, evidence: dict | None) -> dict:
    unit = {"doc_id": "page", "url": None, "index": index, "start": 0, "end": len(text), "text": text,
            "labels": ["future_energy"], "top_label": "future_energy",
            "scores": {"future_energy": 0.9 - index / 10, "other": 0.1}, "truncated": False, "damaged": False}
    if evidence is not None:
        unit["evidence"] = evidence
    return unit


def test_strongest_units_show_their_evidence_highlighted_and_escaped(tmp_path) -> None:
    text = "<b>发展</b>氢能&储能"
    start = text.index("氢能")
    units = [_unit(0, text, {"future_energy": [{"start": start, "end": start + 2, "text": "氢能", "weight": 0.61},
                                               {"start": 0, "end": 3, "text": "<b>", "weight": 0.2}]}),
             # a hand-edited record whose span runs past its text is shown without it
             _unit(1, "燃料电池", {"future_energy": [{"start": 2, "end": 40, "text": "?", "weight": 0.5}]})]
    scored = tmp_path / "units.jsonl"
    scored.write_text("".join(json.dumps(u, ensure_ascii=False) + "\n" for u in units), encoding="utf-8")
    out = tmp_path / "report.html"
    stats = write_report(scored, out)
    strongest = stats["richest"]["future_energy"][0]["strongest"]
    assert [len(u["evidence"]) for u in strongest] == [2, 0]
    page = out.read_text(encoding="utf-8")
    assert ('<mark title="evidence weight 0.20">&lt;b&gt;</mark>发展&lt;/b&gt;'
            '<mark title="evidence weight 0.61">氢能</mark>&amp;储能') in page
    assert "<b>发展" not in page and "燃料电池</li>" in page.replace("\n", "")
    assert "scored with --explain" in page


def test_without_evidence_the_text_is_only_escaped(tmp_path) -> None:
    assert highlight("a<b>&c", []) == "a&lt;b&gt;&amp;c"
    scored = tmp_path / "units.jsonl"
    scored.write_text(json.dumps(_unit(0, "发展氢能", None), ensure_ascii=False) + "\n", encoding="utf-8")
    write_report(scored, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<mark" not in page and "scored with --explain" not in page
