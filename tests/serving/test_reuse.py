"""Each distinct unit scored once: the output is the same with and without reuse, a cache folder
answers a second run, and entries of another model, precision or cleaning are never read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.batch import run

SEEDS = sorted(Path("seeds").glob("*.txt"))
FURNITURE = "首页 | 新闻中心 | 政策文件 | 联系我们\n版权所有 某某网 京ICP备12345678号-1"


def write_crawl(path: Path, pages: int = 80) -> Path:
    """Pages recombined from the seed pages' lines, each between the same site furniture."""
    lines = [line for seed in SEEDS for line in seed.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = np.random.default_rng(0)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(pages):
            body = "\n".join(lines[j] for j in rng.choice(len(lines), size=int(rng.integers(1, 10))))
            page = {"id": f"p{i}", "url": f"http://site{i % 4}.example.cn/{i}.html",
                    "text": f"{FURNITURE}\n{body}\n{FURNITURE}"}
            handle.write(json.dumps(page, ensure_ascii=False) + "\n")
    return path


def outputs(units: Path) -> tuple[bytes, bytes]:
    return units.read_bytes(), units.with_name(units.stem + ".pages.jsonl").read_bytes()


def test_reuse_and_a_cache_folder_leave_the_output_unchanged(tiny_artifact, tmp_path) -> None:
    crawl = write_crawl(tmp_path / "crawl.jsonl")
    plain = run([str(crawl)], tmp_path / "plain" / "units.jsonl", str(tiny_artifact), precision="fp32", reuse=False)
    assert plain.reuse is None
    reused = run([str(crawl)], tmp_path / "reused" / "units.jsonl", str(tiny_artifact), precision="fp32")
    assert outputs(tmp_path / "reused" / "units.jsonl") == outputs(tmp_path / "plain" / "units.jsonl")
    stats = reused.reuse
    assert stats.units == plain.units and stats.from_disk == 0
    assert stats.computed < stats.units / 2  # furniture and recombined lines repeat
    assert stats.saved == stats.units - stats.computed

    cache = tmp_path / "cache"
    first = run([str(crawl)], tmp_path / "first" / "units.jsonl", str(tiny_artifact), precision="fp32", cache=cache)
    second = run([str(crawl)], tmp_path / "second" / "units.jsonl", str(tiny_artifact), precision="fp32", cache=cache)
    assert first.reuse.computed == stats.computed
    assert second.reuse.computed == 0 and second.reuse.from_disk == stats.computed  # no encoder pass at all
    for name in ("first", "second"):
        assert outputs(tmp_path / name / "units.jsonl") == outputs(tmp_path / "plain" / "units.jsonl")


def test_a_cache_made_by_another_model_or_precision_is_never_read(tiny_artifact, tmp_path, monkeypatch) -> None:
    crawl = write_crawl(tmp_path / "crawl.jsonl", pages=30)
    cache = tmp_path / "cache"
    run([str(crawl)], tmp_path / "fp32" / "units.jsonl", str(tiny_artifact), precision="fp32", cache=cache)

    # Another precision of the same model: its own entries, scored afresh, as without a cache folder. (Compared
    # with reuse on: int8's activation scales are set per batch, so its scores follow the batches' make-up.)
    int8 = run([str(crawl)], tmp_path / "int8" / "units.jsonl", str(tiny_artifact), precision="int8", cache=cache)
    run([str(crawl)], tmp_path / "int8-plain" / "units.jsonl", str(tiny_artifact), precision="int8")
    assert int8.reuse.from_disk == 0 and int8.reuse.computed > 0
    assert outputs(tmp_path / "int8" / "units.jsonl") == outputs(tmp_path / "int8-plain" / "units.jsonl")

    # Another model: a retrain writes a new artifact.json (and here, new weights) into the folder.
    retrained = tmp_path / "retrained"
    shutil.copytree(tiny_artifact, retrained)
    for name in ("precision.json", "model.onnx", "model-int8.onnx"):
        (retrained / name).unlink(missing_ok=True)
    meta = json.loads((retrained / "artifact.json").read_text(encoding="utf-8"))
    meta["created"] = "a later run"
    (retrained / "artifact.json").write_text(json.dumps(meta), encoding="utf-8")
    other = run([str(crawl)], tmp_path / "other" / "units.jsonl", str(retrained), precision="fp32", cache=cache)
    assert other.reuse.from_disk == 0 and other.reuse.computed == int8.reuse.computed

    # Another cleaning (a new PREPROCESSING_VERSION): nothing stored under the old one is read.
    import serving.reuse

    monkeypatch.setattr(serving.reuse, "PREPROCESSING_VERSION", "next")
    again = run([str(crawl)], tmp_path / "again" / "units.jsonl", str(tiny_artifact), precision="fp32", cache=cache)
    assert again.reuse.from_disk == 0


def test_memory_stays_bounded_and_answers_equal_the_classifier(tiny_artifact) -> None:
    from runtime.classifier import Classifier
    from serving.reuse import ReusingScorer

    classifier = Classifier.from_artifact(tiny_artifact, precision="fp32")
    texts = ["推动氢能产业发展", "首页", "卫星互联网", "首页", "脑机接口", "推动氢能产业发展", "版权所有", "首页"]
    scorer = ReusingScorer(classifier, "test", memory_items=3)
    got = scorer.predict(texts) + scorer.predict(texts[::-1])
    assert len(scorer.memory) == 3
    expected = classifier.predict(texts, already_clean=True) + classifier.predict(texts[::-1], already_clean=True)
    assert [p.to_dict() for p in got] == [p.to_dict() for p in expected]
    assert scorer.stats.units == 16 and scorer.stats.computed < 16
    with pytest.raises(ValueError, match="cleaned units"):
        scorer.predict(texts, already_clean=False)


def test_cache_without_reuse_is_a_clear_error(tiny_artifact, tmp_path, capsys) -> None:
    from serving.batch import main

    crawl = write_crawl(tmp_path / "crawl.jsonl", pages=2)
    code = main([str(crawl), "-o", str(tmp_path / "o" / "units.jsonl"), "--model", str(tiny_artifact),
                 "--cache", str(tmp_path / "c"), "--no-reuse", "--no-progress"])
    assert code == 2 and "drop --no-reuse or --cache" in capsys.readouterr().err
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x", encoding="utf-8")
    code = main([str(crawl), "-o", str(tmp_path / "o2" / "units.jsonl"), "--model", str(tiny_artifact),
                 "--cache", str(not_a_folder), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot keep a cache there" in err and "Traceback" not in err
