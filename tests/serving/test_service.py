"""End to end: a trained tiny model is packaged, served over real HTTP, and used to score a crawl in batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.live import start_server

pytestmark = pytest.mark.slow

SEEDS = sorted(Path("seeds").glob("*.txt"))


@pytest.fixture(scope="module")
def server(model_tag, bento_home, tmp_path_factory):
    live = start_server(bento_home, model_tag, tmp_path_factory.mktemp("serve") / "serve.log", FIC_MAX_TEXTS="8",
                        FIC_MAX_TEXT_CHARS="300", FIC_MAX_LATENCY_MS="5000")
    yield live.url
    live.stop()


def post(url: str, path: str, payload, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=payload, timeout=60, **kwargs)


def test_classify_answers_in_order(server) -> None:
    texts = ["推动氢能“制、储、运、加、用”全产业链协同发展", "上一篇 2024年9月24日", "發(fā)展人形機器人產業"]
    response = post(server, "/classify", {"texts": texts})
    assert response.status_code == 200, response.text
    results = response.json()
    assert len(results) == 3
    meta = httpx.get(f"{server}/metadata", timeout=10).json()
    for result in results:
        assert set(result["scores"]) == set(meta["labels"])
        assert result["labels"] == ["other"] or "other" not in result["labels"]
        assert result["top_label"] in meta["labels"] and result["truncated"] is False
    # Order is kept: each text alone gets the same answer as inside the list.
    for text, together in zip(texts, results):
        alone = post(server, "/classify", {"texts": [text]}).json()[0]
        assert alone["labels"] == together["labels"]
        assert alone["scores"] == pytest.approx(together["scores"], abs=1e-4)


def test_concurrent_requests_are_batched_and_correct(server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"第{i}条:发展新型储能和锂电池产业" if i % 2 else f"第{i}条:版权所有 联系我们" for i in range(24)]
    expected = [post(server, "/classify", {"texts": [t]}).json()[0]["labels"] for t in texts]
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda t: post(server, "/classify", {"texts": [t]}).json()[0]["labels"], texts))
    assert got == expected


def test_metadata_and_health(server, model_tag) -> None:
    meta = httpx.get(f"{server}/metadata", timeout=10).json()
    assert meta["model"] == model_tag
    assert meta["labels"][-1] == "other" and len(meta["thresholds"]) == 6
    assert meta["preprocessing_version"] and "macro_f1" in meta["metrics"]
    assert meta["batching"]["enabled"] is True
    for path in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(f"{server}{path}", timeout=10).status_code == 200


def test_classify_page_gives_units_spans_and_summary(server) -> None:
    page = SEEDS[1].read_text(encoding="utf-8")
    response = post(server, "/classify_page", {"text": page, "url": "http://example.com/a"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["url"] == "http://example.com/a"
    from runtime.text import split_units

    units = split_units(page)
    assert [(u["index"], u["start"], u["end"], u["text"]) for u in body["units"]] == \
           [(u.index, u.start, u.end, u.text) for u in units]
    summary = body["summary"]
    assert summary["units"] == len(units)
    assert (sum(1 for u in body["units"] if u["labels"] == ["other"]) / len(units)
            == pytest.approx(summary["other_share"], abs=1e-3))


@pytest.mark.parametrize(
    "payload, content_type, fragment",
    [
        ({"texts": []}, None, "at least 1 item"),
        ({"texts": ["a"] * 9}, None, "at most 8 items"),
        ({"texts": ["ok", 3]}, None, "valid string"),
        ({"texts": ["ok", "  \u200b "]}, None, "empty"),
        ({"texts": ["长" * 301]}, None, "at most 300 characters"),
        ({"texts": "一段文字"}, None, "valid array"),
        ({"text": ["x"]}, None, "Field required"),
        ('{"texts": ["未闭合"', "application/json", "Invalid JSON"),
        ("texts=abc", "text/plain", "content-type 'text/plain' is not accepted"),
        ("texts=abc", "multipart/form-data", "send the body as JSON"),
    ],
)
def test_bad_input_is_a_4xx_that_says_what_to_fix(server, payload, content_type, fragment) -> None:
    if isinstance(payload, str):
        response = httpx.post(f"{server}/classify", content=payload, headers={"content-type": content_type}, timeout=30)
    else:
        response = post(server, "/classify", payload)
    assert 400 <= response.status_code < 500, response.text
    assert fragment in response.text


def test_bad_page_input(server) -> None:
    assert post(server, "/classify_page", {"text": ""}).status_code == 400
    # A page with nothing but punctuation is not malformed: it has no units.
    response = post(server, "/classify_page", {"text": "。。。\n——"})
    assert response.status_code == 200 and response.json()["units"] == [] and response.json()["summary"]["units"] == 0


CLIENT_TEXTS = ["发展低空经济和商业航天", "推动氢能“制、储、运、加、用”全产业链协同发展", "上一篇 2024年9月24日",
                "加快人形机器人和脑机接口产业发展", "新型储能和锂电池材料", "版权所有 联系我们", "卫星互联网与量子通信",
                "生物制造和基因技术", "第三代半导体材料", "关于我们"]


def raw_answers(server: str, texts: list[str], max_texts: int = 8) -> list[dict]:
    """POST /classify by hand, in requests of at most the server's max_texts (FIC_MAX_TEXTS)."""
    out = []
    for start in range(0, len(texts), max_texts):
        response = post(server, "/classify", {"texts": texts[start:start + max_texts]})
        assert response.status_code == 200, response.text
        out += response.json()
    return out


def assert_same_answers(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for mine, raw in zip(got, expected):
        assert set(mine) == set(raw) == {"labels", "top_label", "scores", "truncated"}
        assert (mine["labels"], mine["top_label"], mine["truncated"]) == \
            (raw["labels"], raw["top_label"], raw["truncated"])
        assert set(mine["scores"]) == set(raw["scores"])
        # Other requests batched alongside can change padding, hence float noise in the last digits.
        assert mine["scores"] == pytest.approx(raw["scores"], abs=1e-5)


def test_python_client(server) -> None:
    import bentoml

    from serving.client import ClassifierClient

    texts = CLIENT_TEXTS[:8]  # one request's worth (FIC_MAX_TEXTS=8)
    expected = raw_answers(server, texts)
    with bentoml.SyncHTTPClient(server) as client:
        assert_same_answers(client.classify(texts=texts), expected)
    # Our own client: the same answers, also for a list longer than max_texts (split into two requests).
    with ClassifierClient(server) as client:
        assert_same_answers(client.classify(texts), expected)
        assert_same_answers(client.classify(CLIENT_TEXTS), raw_answers(server, CLIENT_TEXTS))
    # The answers differ from text to text, so one repeated or misplaced answer would not pass for the right one.
    assert len({r["scores"]["other"] for r in expected}) == len(texts)


# ----------------------------------------------------------------------------- batch scoring


def run_batch(inputs: list[str], out: Path, model: str, env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving.batch", *inputs, "-o", str(out), "--model", model,
                           "--no-progress", "--chunk-units", "64", "--precision", "fp32"],
                          capture_output=True, text=True, env=env, timeout=300, **kwargs)


def test_batch_scores_seeds_like_the_service(server, model_tag, bento_home, tmp_path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(bento_home)}
    out = tmp_path / "units.jsonl"
    result = run_batch(["seeds"], out, model_tag, env)
    assert result.returncode == 0, result.stderr
    assert "documents read 5, skipped 0 (already in output), failed 0, written 5" in result.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    pages = [json.loads(line) for line in (tmp_path / "units.pages.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(pages) == 5
    for path in SEEDS:
        served = post(server, "/classify_page", {"text": path.read_text(encoding="utf-8")}).json()
        mine = [r for r in records if r["doc_id"] == f"seeds/{path.name}"]
        assert [(r["start"], r["end"], r["text"], r["labels"]) for r in mine] == \
               [(u["start"], u["end"], u["text"], u["labels"]) for u in served["units"]]
        for r, u in zip(mine, served["units"]):
            assert r["scores"] == pytest.approx(u["scores"], abs=1e-4)
        page = next(p for p in pages if p["doc_id"] == f"seeds/{path.name}")
        assert page["units_per_label"] == served["summary"]["units_per_label"]

    again = run_batch(["seeds"], out, model_tag, env)
    assert "skipped 5 (already in output)" in again.stderr and "written 0" in again.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(records)


def test_batch_reads_html_gbk_big5_and_reports_failures(tiny_artifact, tmp_path) -> None:
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    (crawl / "gbk.txt").write_bytes("推动氢能产业发展。版权所有。".encode("gbk"))
    (crawl / "big5.txt").write_bytes("發展低空經濟，培育商業航天。".encode("big5"))
    (crawl / "page.html").write_text("<html><head><style>p{color:red}</style></head><body><script>var x='脚本';"
                                     "</script><p>发展量子科技。</p><nav>首页</nav></body></html>",
                                     encoding="utf-8")
    (crawl / "pages.jsonl").write_text(json.dumps({"id": "a", "text": "建设智算中心。", "url": "http://x"},
                                                  ensure_ascii=False)
                                       + "\n{not json\n" + json.dumps({"url": "no text"}) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "units.jsonl"
    result = run_batch([str(crawl), str(tmp_path / "missing.txt")], out, str(tiny_artifact), dict(os.environ))
    assert result.returncode == 1  # some inputs failed; the rest were written
    assert "documents read 7, skipped 0 (already in output), failed 3, written 4" in result.stderr
    assert ("not valid JSON" in result.stderr and "no string field 'text'" in result.stderr
            and "no such file" in result.stderr)
    texts = {json.loads(line)["doc_id"]: [] for line in out.read_text(encoding="utf-8").splitlines()}
    for line in out.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        texts[record["doc_id"]].append(record["text"])
    assert texts["crawl/gbk.txt"] == ["推动氢能产业发展。", "版权所有。"]
    assert texts["crawl/big5.txt"] == ["发展低空经济,培育商业航天。"]
    assert texts["crawl/page.html"] == ["发展量子科技。", "首页"]
    assert texts["a"] == ["建设智算中心。"]


def test_killed_batch_run_resumes_to_the_same_output(tiny_artifact, tmp_path) -> None:
    pages = [p.read_text(encoding="utf-8") for p in SEEDS]
    crawl = tmp_path / "crawl.jsonl"
    with crawl.open("w", encoding="utf-8") as handle:
        for i in range(150):
            handle.write(json.dumps({"id": f"doc{i:03d}", "text": pages[i % len(pages)]}, ensure_ascii=False) + "\n")
    env = dict(os.environ)
    clean_out = tmp_path / "clean" / "units.jsonl"
    assert run_batch([str(crawl)], clean_out, str(tiny_artifact), env).returncode == 0

    out = tmp_path / "resumed" / "units.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "serving.batch", str(crawl), "-o", str(out), "--model",
                             str(tiny_artifact), "--no-progress", "--chunk-units", "64", "--precision", "fp32"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    summaries = out.with_name("units.pages.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and (not summaries.exists() or len(summaries.read_bytes().splitlines()) < 10):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    finished = len(summaries.read_bytes().splitlines())
    assert 10 <= finished < 150, "the run was not interrupted part-way"

    result = run_batch([str(crawl)], out, str(tiny_artifact), env)
    assert result.returncode == 0, result.stderr
    assert "documents read 150" in result.stderr

    def load(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    for name in ("units.jsonl", "units.pages.jsonl"):
        a, b = load(clean_out.with_name(name)), load(out.with_name(name))
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert {k: v for k, v in x.items() if k != "scores"} == {k: v for k, v in y.items() if k != "scores"}
            if "scores" in x:
                assert np.allclose(list(x["scores"].values()), list(y["scores"].values()), atol=1e-4)


def test_bentoml_build_packs_service_and_model(model_tag, bento_home) -> None:
    env = {**os.environ, "BENTOML_HOME": str(bento_home), "FIC_MODEL": model_tag, "BENTOML_DO_NOT_TRACK": "True"}
    result = subprocess.run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    listing = subprocess.run([sys.executable, "-m", "bentoml", "list", "-o", "json"], capture_output=True, text=True,
                             env=env, timeout=120)
    bentos = json.loads(listing.stdout)
    assert any(b["tag"].startswith("future-industry-classifier:") for b in bentos)


def test_metadata_says_its_metrics_are_the_test_splits() -> None:
    # In process, without a server: /metadata's answer is built from the loaded model's artifact.json.
    from types import SimpleNamespace

    from serving.service import FutureIndustryClassifier, Metadata

    classifier = SimpleNamespace(labels=["future_energy", "other"], directions=["future_energy"], thresholds=[0.5],
                                 max_length=64, lexical=None, precision="fp32",
                                 meta={"test_split": "2 whole pages (001_c370f3aba9b43165, 003_e411691ecbd73fac)"})
    service = SimpleNamespace(classifier=classifier, tag="fic:test", threads=2,
                              info={"metrics": {"macro_f1": 0.9}, "base_model": "scratch", "from_scratch": True})
    answer = FutureIndustryClassifier.inner.metadata(service).model_dump()
    assert answer["metrics"] == {"macro_f1": 0.9}
    assert answer["metrics_split"] == "test split: 2 whole pages (001_c370f3aba9b43165, 003_e411691ecbd73fac)"
    assert "test split" in Metadata.model_json_schema()["properties"]["metrics"]["description"]
