"""Review export: the model's evidence as Label Studio span pre-annotations beside the choices; import ignores them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from runtime.taxonomy import load_taxonomy
from training.review import (
    EVIDENCE_NAME,
    Candidate,
    import_answers,
    label_config,
    ls_task,
    shown_label,
    utf16_offset,
    write_review,
)

TAXONOMY = load_taxonomy()
NAMES_EN = {"future_energy": "Future energy", "future_materials": "Future materials"}


def _candidate(text: str, evidence: dict | None) -> Candidate:
    return Candidate(text, ["future_energy", "future_materials"], ["p(future_energy) = 0.52"], 0.9, "future_energy",
                     {"ref": "page#3", "doc": "page", "unit": 3, "evidence": evidence})


def test_evidence_spans_are_labels_regions_in_utf16_offsets() -> None:
    text = "𠀀发展氢能与石墨烯"  # a character above U+FFFF first: two UTF-16 code units in Label Studio
    energy, materials = text.index("氢能"), text.index("石墨烯")
    evidence = {"future_energy": [{"start": energy, "end": energy + 2, "text": "氢能", "weight": 0.7}],
                "future_materials": [{"start": materials, "end": materials + 3, "text": "石墨烯", "weight": 0.8},
                                     {"start": 0, "end": 2, "text": "不对", "weight": 0.1}]}  # not this text's: dropped
    shown = {d: shown_label(TAXONOMY, NAMES_EN, d) for d in TAXONOMY.directions}
    choices, *regions = ls_task(_candidate(text, evidence), "m", shown)["predictions"][0]["result"]
    assert choices["type"] == "choices" and choices["value"]["choices"] == ["future_energy", "future_materials"]
    assert [(r["from_name"], r["to_name"], r["type"]) for r in regions] == [(EVIDENCE_NAME, "text", "labels")] * 2
    assert [r["value"] for r in regions] == [
        {"start": energy + 1, "end": energy + 3, "text": "氢能", "labels": [shown["future_energy"]]},
        {"start": materials + 1, "end": materials + 4, "text": "石墨烯", "labels": [shown["future_materials"]]}]
    assert [r["score"] for r in regions] == [0.7, 0.8]
    assert utf16_offset("ab", 2) == 2
    # A unit scored without --explain gets the choices alone, as before.
    assert len(ls_task(_candidate(text, None), "m", shown)["predictions"][0]["result"]) == 1


def test_the_config_has_a_span_label_per_direction_showing_what_the_choices_show(tmp_path) -> None:
    config = ET.fromstring(label_config(TAXONOMY, NAMES_EN))
    labels = config.find("Labels")
    assert labels.get("name") == EVIDENCE_NAME and labels.get("toName") == "text"
    assert [label.get("alias") for label in labels.findall("Label")] == list(TAXONOMY.directions)
    choice_values = {c.get("alias"): c.get("value") for c in config.find("Choices").findall("Choice")}
    assert all(label.get("value") == choice_values[label.get("alias")] for label in labels.findall("Label"))

    # The task file's span labels are values of that config.
    text = "发展氢能"
    paths = write_review(tmp_path / "r.json", [_candidate(text, {"future_energy": [
        {"start": 2, "end": 4, "text": "氢能", "weight": 0.9}]})], TAXONOMY, "m")
    values = {label.get("value") for label in ET.fromstring(paths["config"].read_text(encoding="utf-8"))
              .find("Labels").findall("Label")}
    (task,) = json.loads(paths["tasks"].read_text(encoding="utf-8"))
    assert task["predictions"][0]["result"][1]["value"]["labels"][0] in values


def test_import_reads_the_choices_and_ignores_the_spans(tmp_path) -> None:
    text = "建设氢能储运加注网络"
    result = [{"from_name": "labels", "to_name": "text", "type": "choices", "value": {"choices": ["future_energy"]}},
              {"from_name": EVIDENCE_NAME, "to_name": "text", "type": "labels",
               "value": {"start": 2, "end": 4, "text": "氢能", "labels": ["未来能源 · Future energy"]}}]
    export = tmp_path / "export.json"
    export.write_text(json.dumps([{"id": 1, "data": {"text": text, "doc": "d", "unit": 0}, "predictions": [],
                                   "annotations": [{"id": 1, "completed_by": 1, "result": result,
                                                    "created_at": "2026-11-25T10:00:00Z"}]}], ensure_ascii=False),
                      encoding="utf-8")
    out = tmp_path / "reviewed"
    assert import_answers(export, "spans", TAXONOMY, [], out, "me")["written"] == 1
    (record,) = [json.loads(x) for x in (out / "spans.jsonl").read_text(encoding="utf-8").splitlines()]
    assert record["labels"] == ["future_energy"] and "evidence" not in record
