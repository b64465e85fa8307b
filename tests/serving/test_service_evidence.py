"""explain=true over real HTTP: the evidence beside the cleaned text, its limits, its validation, and the same
evidence as the batch scorer's --explain."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from runtime.text import clean
from tests.live import start_server

pytestmark = pytest.mark.slow

MAX_EXPLAIN = 3
TEXTS = ["推動氫能產(chǎn)業(yè)發展,建設加氫站", "上一篇 2024年9月24日", "　发展ＡＩ芯片和量子通信"]
PAGE = """会议提出,加快建设氢能制储运加用一体化示范区,推动燃料电池重卡在港口批量應用。
支持高校院所与企业共建类脑芯片联合实验室。
版权所有 市科学技术局
"""


@pytest.fixture(scope="module")
def server(model_tag, bento_home, tmp_path_factory):
    live = start_server(bento_home, model_tag, tmp_path_factory.mktemp("serve") / "serve.log", FIC_MAX_TEXTS="8",
                        FIC_MAX_EXPLAIN_UNITS=str(MAX_EXPLAIN), FIC_MAX_LATENCY_MS="5000")
    yield live.url
    live.stop()


def post(url: str, path: str, payload) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=payload, timeout=120)


def check_evidence(result: dict, text: str) -> None:
    """Evidence for exactly the result's directions, every span indexing `text`, strongest first."""
    assert set(result["evidence"]) == {label for label in result["labels"] if label != "other"}
    for spans in result["evidence"].values():
        assert [s["weight"] for s in spans] == sorted((s["weight"] for s in spans), reverse=True)
        for span in spans:
            assert text[span["start"]:span["end"]] == span["text"]


def test_explained_results_carry_the_cleaned_text_and_its_evidence(server) -> None:
    plain = post(server, "/classify", {"texts": TEXTS})
    explained = post(server, "/classify", {"texts": TEXTS, "explain": True})
    assert plain.status_code == 200 and explained.status_code == 200, explained.text
    for raw, before, after in zip(TEXTS, plain.json(), explained.json()):
        assert set(before) == {"labels", "top_label", "scores", "truncated"}  # the default reply is unchanged
        assert after["text"] == clean(raw)  # glosses dropped, traditional made simplified, full width folded
        assert after["labels"] == before["labels"] and after["scores"] == pytest.approx(before["scores"], abs=1e-4)
        check_evidence(after, after["text"])
    assert any(r["evidence"] for r in explained.json())
    # explain=false is the plain reply.
    same = post(server, "/classify", {"texts": TEXTS, "explain": False}).json()
    assert [set(r) for r in same] == [set(r) for r in plain.json()]


@pytest.mark.parametrize("value", ["yes", "true", 1, None, [True], {"on": True}])
def test_explain_of_another_type_is_a_400(server, value) -> None:
    for path, payload in (("/classify", {"texts": TEXTS[:1]}), ("/classify_page", {"text": PAGE})):
        response = post(server, path, {**payload, "explain": value})
        assert response.status_code == 400, response.text
        assert "explain" in response.text


def test_explaining_is_bounded_and_the_internal_route_is_not_public(server) -> None:
    response = post(server, "/classify", {"texts": ["发展氢能"] * (MAX_EXPLAIN + 1), "explain": True})
    assert response.status_code == 413 and "FIC_MAX_EXPLAIN_UNITS" in response.json()["error"]
    assert post(server, "/classify", {"texts": ["发展氢能"] * (MAX_EXPLAIN + 1)}).status_code == 200  # plain: fine
    assert post(server, "/classify_explained", {"texts": ["发展氢能"], "explain": True}).status_code == 404
    meta = httpx.get(f"{server}/metadata", timeout=10).json()
    assert meta["limits"]["max_explain_units"] == MAX_EXPLAIN
    spec = httpx.get(f"{server}/docs.json", timeout=10).json()
    assert "/classify_explained" not in spec["paths"]
    body = spec["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["explain"]["type"] == "boolean"


def test_page_evidence_equals_the_batch_scorers(server, model_tag, bento_home, tmp_path) -> None:
    served = post(server, "/classify_page", {"text": PAGE, "explain": True})
    assert served.status_code == 200, served.text
    units = served.json()["units"]
    for unit in units:
        check_evidence(unit, unit["text"])
    assert any(unit["evidence"] for unit in units)
    assert all("evidence" not in unit for unit in post(server, "/classify_page", {"text": PAGE}).json()["units"])

    (tmp_path / "page.txt").write_text(PAGE, encoding="utf-8")
    out = tmp_path / "units.jsonl"
    result = subprocess.run([sys.executable, "-m", "serving.batch", str(tmp_path / "page.txt"), "-o", str(out),
                             "--model", model_tag, "--no-progress", "--precision", "fp32", "--explain"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "BENTOML_HOME": str(bento_home)})
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["text"], r["labels"]) for r in records] == [(u["text"], u["labels"]) for u in units]
    for record, unit in zip(records, units):
        assert set(record["evidence"]) == set(unit["evidence"])
        for direction, spans in unit["evidence"].items():
            theirs = record["evidence"][direction]
            assert [(s["start"], s["end"], s["text"]) for s in spans] == [(s["start"], s["end"], s["text"])
                                                                          for s in theirs]
            assert [s["weight"] for s in spans] == pytest.approx([s["weight"] for s in theirs], abs=2e-3)


def test_a_page_with_more_units_to_explain_than_the_limit_is_a_413(server) -> None:
    candidates = [line for line in PAGE.splitlines() if line] + TEXTS
    labelled = [r["labels"] for r in post(server, "/classify", {"texts": candidates}).json()]
    directional = next(text for text, labels in zip(candidates, labelled) if labels != ["other"])
    page = "\n".join([directional] * (MAX_EXPLAIN + 1))
    response = post(server, "/classify_page", {"text": page, "explain": True})
    assert response.status_code == 413 and "FIC_MAX_EXPLAIN_UNITS" in response.json()["error"]
    assert post(server, "/classify_page", {"text": page}).status_code == 200
    fits = post(server, "/classify_page", {"text": "\n".join([directional] * MAX_EXPLAIN), "explain": True})
    assert fits.status_code == 200 and all(u["evidence"] for u in fits.json()["units"])


def test_the_python_client_explains_in_requests_of_the_servers_limit(server) -> None:
    from serving.client import ClassifierClient

    texts = TEXTS + ["发展低空经济和商业航天", "新型储能和锂电池材料"]  # more than MAX_EXPLAIN: two requests
    with ClassifierClient(server) as client:
        results = client.classify(texts, explain=True)
        assert [r["text"] for r in results] == [clean(t) for t in texts]
        for result in results:
            check_evidence(result, result["text"])
        assert all("evidence" not in r for r in client.classify(texts))
        with pytest.raises(TypeError):
            client.classify(texts, explain="yes")
