(
    """Review export, import and audit, without a Label Studio server """
    """(tests/training/test_label_studio.py has the real one)."""
)

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from runtime.taxonomy import load_taxonomy
from runtime.text import clean
from tests.serving.test_report import score_seed_crawl
from training.config import ConfigError
from training.data import load_examples
from training.review import (
    Candidate,
    collapse_near_duplicates,
    import_answers,
    main,
    order_rare_first,
    shingles,
)

TAXONOMY = load_taxonomy()


@pytest.fixture(scope="module")
def scored(tiny_artifact, tmp_path_factory) -> Path:
    return score_seed_crawl(tiny_artifact, tmp_path_factory.mktemp("review"))


def _jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def test_export_writes_label_studio_tasks_config_and_jsonl(scored, tiny_artifact, tmp_path, capsys) -> None:
    out = tmp_path / "review.json"
    assert main(["export", str(scored), "-n", "25", "-o", str(out), "--model", str(tiny_artifact),
                 "--keep-labelled"]) == 0
    tasks = json.loads(out.read_text(encoding="utf-8"))
    assert len(tasks) == 25
    for task in tasks:
        assert task["data"]["text"] and task["data"]["why"] and task["data"]["doc"].startswith("0")
        (pred,) = task["predictions"]
        (result,) = pred["result"]
        assert (result["from_name"], result["to_name"], result["type"]) == ("labels", "text", "choices")
        assert set(result["value"]["choices"]) <= set(TAXONOMY.all_labels)
        assert pred["model_version"] == str(tiny_artifact)
    texts = [t["data"]["text"] for t in tasks]
    assert all(_jaccard(a, b) < 0.8 for i, a in enumerate(texts) for b in texts[i + 1:])  # near-duplicates collapsed

    config = ET.fromstring(out.with_name("review.label_config.xml").read_text(encoding="utf-8"))
    choices = config.find("Choices")
    assert choices.get("choice") == "multiple" and choices.get("toName") == "text"
    assert [c.get("alias") for c in choices.findall("Choice")] == TAXONOMY.all_labels
    assert "never goes with a direction" in config.find("Header").get("value")
    assert "exclusive" in out.with_name("review.instructions.html").read_text(encoding="utf-8")

    lines = [json.loads(x) for x in out.with_name("review.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["text"] for x in lines] == texts and all(x["labels"] == [] for x in lines)


def test_export_skips_labelled_units_and_checks_the_model(scored, tiny_artifact, tmp_path, capsys) -> None:
    # Every seed unit is already in labels/seed_units.jsonl.
    assert main(["export", str(scored), "-n", "10", "-o", str(tmp_path / "a.json"), "--model", str(tiny_artifact)]) == 0
    assert json.loads((tmp_path / "a.json").read_text(encoding="utf-8")) == []
    # Thresholds that do not reproduce the scored labels: the crawl was scored by another model.
    other = tmp_path / "other-model"
    other.mkdir()
    meta = json.loads((tiny_artifact / "artifact.json").read_text(encoding="utf-8"))
    meta["thresholds"] = [0.999] * len(meta["thresholds"])
    (other / "artifact.json").write_text(json.dumps(meta), encoding="utf-8")
    capsys.readouterr()
    assert main(["export", str(scored), "-o", str(tmp_path / "b.json"), "--model", str(other), "--keep-labelled"]) == 2
    assert "pass the --model the crawl was scored with" in capsys.readouterr().err
    # Not scorer output.
    assert main(["export", "labels/seed_units.jsonl", "-o", str(tmp_path / "c.json")]) == 2
    assert "not a unit record of python -m serving.batch" in capsys.readouterr().err


def _cand(text: str, focus: str, priority: float) -> Candidate:
    return Candidate(text, [focus], [], priority, focus, {"ref": text[:6]})


def test_rare_directions_first_and_duplicates_collapsed() -> None:
    frequency = {"future_energy": 50, "future_space": 2}
    cands = [_cand(f"关于加快氢能产业链建设推动燃料电池汽车示范应用的实施意见{i}", "future_energy", 0.9 - i / 100)
             for i in range(3)]
    cands += [_cand("商业航天卫星发射", "future_space", 0.5), _cand("说说天气", "other", 0.01)]
    ordered = order_rare_first(cands, frequency)
    assert ordered[0].focus == "future_space" and ordered[-1].focus == "other"  # low priority goes last
    kept = collapse_near_duplicates(ordered, limit=10)
    assert len(kept) == 3  # the three press-release variants are one group
    energy = next(c for c in kept if c.focus == "future_energy")
    assert len(energy.duplicates) == 2
    assert len(collapse_near_duplicates(ordered, limit=1)) == 1


def _ls_task(task_id: int, text: str, choices: list[list[str]] | None, doc: str = "crawl/a.html") -> dict:
    annotations = [{"id": task_id * 10 + i, "completed_by": i + 1, "was_cancelled": False,
                    "created_at": "2026-11-25T10:00:00Z", "updated_at": f"2026-11-25T10:0{i}:00Z",
                    "result": [{"from_name": "labels", "to_name": "text", "type": "choices",
                                "value": {"choices": c}}]} for i, c in enumerate(choices or [])]
    return {"id": task_id, "annotations": annotations, "predictions": [],
            "data": {"text": text, "doc": doc, "url": "https://example.cn/a", "unit": task_id, "start": 0,
                     "end": len(text), "ref": f"{doc}#{task_id}", "suggested": "future_energy"}}


def test_import_label_studio_export(tmp_path) -> None:
    seed = json.loads(Path("labels/seed_units.jsonl").read_text(encoding="utf-8").splitlines()[0])
    wrong = ["future_space"] if seed["labels"] != ["future_space"] else ["future_health"]
    export = tmp_path / "project-1.json"
    export.write_text(json.dumps([
        _ls_task(1, "建设氢能储运加注网络,推动燃料电池汽车示范", [["future_energy"]]),
        _ls_task(2, "低空经济和商业航天产业集群加快成长", [["future_space"], ["future_space"]]),  # two agree
        _ls_task(3, "量子通信骨干网建成", [["future_information"], ["other"]]),  # two disagree
        _ls_task(4, "版权所有 某某网", [["other", "future_energy"]]),  # other is exclusive
        _ls_task(5, "尚未标注的一句话", None),
        _ls_task(6, seed["text"], [wrong]),  # contradicts labels/seed_units.jsonl
        _ls_task(7, seed["text"], [seed["labels"]]),
    ], ensure_ascii=False), encoding="utf-8")
    out_dir = tmp_path / "reviewed"
    result = import_answers(export, "crawl-1", TAXONOMY, ["labels/seed_units.jsonl"], out_dir, "me")
    assert result["written"] == 2 and result["unanswered"] == 1 and result["already_same"] == 1
    assert len(result["conflicts"]) == 1 and "kept labels/seed_units.jsonl:1" in result["conflicts"][0]
    assert any("annotators disagree" in p for p in result["problems"])
    assert any("cannot be combined" in p for p in result["problems"])
    records = [json.loads(x) for x in (out_dir / "crawl-1.jsonl").read_text(encoding="utf-8").splitlines()]
    first = records[0]
    assert first["labels"] == ["future_energy"] and first["source"] == "reviewed"
    assert (first["doc"], first["url"], first["unit"], first["start"]) == ("crawl/a.html", "https://example.cn/a", 1, 0)
    assert first["annotator"] == "label-studio-user-1" and first["annotated_at"] == "2026-11-25T10:00:00Z"
    assert first["model_labels"] == ["future_energy"] and first["task"] == 1
    assert records[1]["annotator"] == "label-studio-user-1, label-studio-user-2"

    # The reviewed file is a valid label file whose units count as real (non-authored) text.
    examples = load_examples([str(out_dir / "*.jsonl")], TAXONOMY)
    assert {ex.source for ex in examples} == {"reviewed"} and len(examples) == 2


def test_import_edited_jsonl(tmp_path) -> None:
    edited = tmp_path / "review.jsonl"
    edited.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in [
        {"text": "推进钠离子电池产业化", "labels": ["future_energy"], "doc": "d", "unit": 3, "suggested": ["other"]},
        {"text": "相关阅读", "labels": []},
        {"text": "脑机接口用于康复治疗", "labels": ["future_health"], "annotator": "wang"},
    ]) + "\n", encoding="utf-8")
    result = import_answers(edited, "by-hand", TAXONOMY, [], tmp_path / "reviewed", "li")
    assert result["written"] == 2 and result["unanswered"] == 1 and not result["problems"]
    records = [json.loads(x)
               for x in (tmp_path / "reviewed" / "by-hand.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["annotator"] for r in records] == ["li", "wang"] and records[0]["model_labels"] == ["other"]


def test_optional_label_glob(tmp_path) -> None:
    missing = str(tmp_path / "nothing" / "*.jsonl")
    assert load_examples(["labels/seed_units.jsonl", "?" + missing], TAXONOMY)
    with pytest.raises(ConfigError, match="matches no file"):
        load_examples(["labels/seed_units.jsonl", missing], TAXONOMY)


def test_audit_finds_planted_label_errors(tmp_path, capsys) -> None:
    lines = Path("labels/authored/future_energy.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(x) for x in lines]
    planted = []
    for record in records[:120:12]:  # ten clear energy units relabelled as other
        if record["labels"] == ["future_energy"]:
            record["labels"] = ["other"]
            planted.append(clean(record["text"]))  # the review shows units as the model sees them
    noisy = tmp_path / "noisy.jsonl"
    noisy.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "audit.json"
    labels = ["labels/seed_units.jsonl", "labels/authored/other_general.jsonl", str(noisy)]
    assert main(["audit", "-o", str(out), "-n", "40", "-k", "3", "--labels", *labels]) == 0
    tasks = json.loads(out.read_text(encoding="utf-8"))
    found = {t["data"]["text"] for t in tasks}
    assert len(found & set(planted)) >= len(planted) // 2, capsys.readouterr().err
    task = next(t for t in tasks if t["data"]["text"] in planted)
    assert task["data"]["given_labels"] == "other"
    assert "future_energy" in task["predictions"][0]["result"][0]["value"]["choices"]
    assert "out-of-fold" in task["data"]["why"]


def test_plain_confident_learning_without_cleanlab(monkeypatch) -> None:
    import sys

    import numpy as np

    from training.review import label_issues

    rng = np.random.default_rng(0)
    given = np.zeros((60, 2), dtype=np.float32)
    given[:20, 0] = 1
    given[20:40, 1] = 1
    probs = np.clip(given * 0.85 + rng.uniform(0, 0.1, given.shape), 0, 1)
    given[5] = [0, 0]  # a clear direction-0 unit labelled other
    for name in [m for m in sys.modules if m.split(".")[0] == "cleanlab"] + ["cleanlab"]:
        monkeypatch.setitem(sys.modules, name, None)  # importing cleanlab now raises ImportError
    flagged, quality, method = label_issues(given, probs)
    assert "cleanlab not installed" in method
    assert flagged[5] and int(np.argmin(quality)) == 5 and flagged.sum() <= 3


def test_export_takes_the_model_from_the_scorer_run_file(scored, tiny_artifact, tmp_path) -> None:
    if not scored.with_name("units.run.json").is_file():
        pytest.skip("this serving.batch writes no units.run.json")
    out = tmp_path / "r.json"
    assert main(["export", str(scored), "-n", "3", "-o", str(out), "--keep-labelled"]) == 0
    tasks = json.loads(out.read_text(encoding="utf-8"))
    assert {t["predictions"][0]["model_version"] for t in tasks} == {str(tiny_artifact)}
