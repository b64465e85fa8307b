"""python -m serving.batch --explain: evidence in JSONL and Parquet records, the same as the Explainer's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.batch import main
from serving.output import read_units

pytestmark = pytest.mark.slow

PAGE = """发布时间:2026-10-12 09:30 来源:本网
会议提出,加快建设氢能制储运加用一体化示范区,推动燃料電池重卡在港口批量應用。
支持高校院所与企业共建类脑芯片联合实验室,攻关存算一体架构。
鼓励发展碳纤维复合材料和石墨烯导热膜,服务新能源汽车轻量化。
版权所有 市科学技术局
"""


def score(capsys, *args: str) -> tuple[int, str]:
    code = main([*args, "--no-progress"])
    return code, capsys.readouterr().err


def present(evidence: dict | None) -> dict:
    """Parquet keeps every direction as a struct field (null when absent); JSONL only the given ones."""
    return {d: spans for d, spans in (evidence or {}).items() if spans is not None}


def test_explained_records_carry_the_evidence_of_their_directions(tiny_artifact, tmp_path, capsys) -> None:
    from runtime.classifier import Classifier
    from runtime.evidence import Explainer
    from runtime.text import split_units

    crawl = tmp_path / "crawl"
    crawl.mkdir()
    (crawl / "page.txt").write_text(PAGE, encoding="utf-8")
    (crawl / "copy.txt").write_text(PAGE, encoding="utf-8")  # repeated units are explained once, alike
    jsonl, parquet = tmp_path / "jsonl" / "units.jsonl", tmp_path / "parquet" / "units.parquet"
    for out in (jsonl, parquet):
        code, err = score(capsys, str(crawl), "-o", str(out), "--model", str(tiny_artifact), "--precision", "fp32",
                          "--explain")
        assert code == 0, err
    records = read_units(jsonl)
    assert len(records) == 2 * len(split_units(PAGE))
    classifier = Classifier.from_artifact(tiny_artifact, precision="fp32")
    texts = [r["text"] for r in records]
    expected = Explainer(classifier).explain(texts, classifier.predict(texts, already_clean=True))
    assert [r["evidence"] for r in records] == expected
    assert any(r["evidence"] for r in records)
    for record in records:
        assert set(record["evidence"]) == {label for label in record["labels"] if label != "other"}
        for spans in record["evidence"].values():
            for span in spans:
                assert record["text"][span["start"]:span["end"]] == span["text"]
    assert [present(r["evidence"]) for r in read_units(parquet)] == [r["evidence"] for r in records]

    # Without --explain the records are as before, and a resume may not switch evidence on or off.
    plain = tmp_path / "plain" / "units.jsonl"
    assert score(capsys, str(crawl), "-o", str(plain), "--model", str(tiny_artifact), "--precision", "fp32")[0] == 0
    assert all("evidence" not in r for r in read_units(plain))
    manifest = json.loads(jsonl.with_name("units.run.json").read_text(encoding="utf-8"))
    assert manifest["explain"] is True
    code, err = score(capsys, str(crawl), "-o", str(jsonl), "--model", str(tiny_artifact), "--precision", "fp32")
    assert code == 2 and "explain True" in err


def test_explain_with_an_onnx_precision_is_one_clear_error(tiny_artifact, tmp_path, capsys) -> None:
    page = tmp_path / "page.txt"
    page.write_text(PAGE, encoding="utf-8")
    code, err = score(capsys, str(page), "-o", str(tmp_path / "u.jsonl"), "--model", str(tiny_artifact),
                      "--precision", "onnx", "--explain")
    assert code == 2 and "torch weights" in err and Path(tmp_path / "u.jsonl").exists() is False


def test_ray_actors_explain_like_the_local_engine(tiny_artifact) -> None:
    # The actor class called in process (no cluster): the same records as the in-process engine's.
    import numpy as np

    from runtime.classifier import Classifier
    from runtime.evidence import Explainer
    from serving.local_engine import score_split, split_document
    from serving.ray_engine import Scorer, _split_row
    from serving.sources import Document

    row = _split_row({"doc_id": "page", "url": None, "source": "page.txt", "status": "ok", "reason": "",
                      "text": PAGE, "warnings": "[]"}, max_units=100)
    batch = {key: np.array([value], dtype=object) for key, value in row.items()}
    actor = Scorer(str(tiny_artifact), "fp32", batch_size=16, threads=1, reuse=True, explain=True)
    records = json.loads(actor(batch)["records"][0])
    classifier = Classifier.from_artifact(tiny_artifact, precision="fp32")
    (expected, _), = score_split(classifier, [split_document(Document("page", PAGE), 100)], Explainer(classifier))
    assert [r["evidence"] for r in records] == [r["evidence"] for r in expected]
    assert any(r["evidence"] for r in records)
