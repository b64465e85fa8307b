"""A real round trip through Label Studio: export -> server -> annotate -> export -> import -> retrain.

Label Studio runs from its own virtual environment (it pins older numpy and pyarrow):

    export FIC_LABEL_STUDIO_VENV="$(bash tests/label_studio_venv.sh)"
    python -m pytest -m labelstudio

The server starts on 127.0.0.1 with SQLite in a temporary home, no analytics and no
version check; a user and a legacy API token are created from environment variables.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import train_tiny

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

VENV = os.environ.get("FIC_LABEL_STUDIO_VENV", "")
LABEL_STUDIO = Path(VENV) / "bin" / "label-studio"
START_TIMEOUT_S = 420  # the first start creates and migrates the SQLite database

# A page none of whose units is labelled yet, so that the review export proposes them.
PAGE = """市科技局召开未来产业推进会

发布时间:2026-10-12 09:30 来源:本网

会议提出,加快建设氢能制储运加用一体化示范区,推动燃料电池重卡在港口和矿区批量应用。
依托卫星遥感和北斗导航,打造低空经济应用场景,开通城市无人机物流航线三条。
支持高校院所与企业共建类脑芯片联合实验室,攻关存算一体架构。
推进基因编辑育种和细胞治疗产品临床转化,建设生物医药中试平台。
鼓励发展碳纤维复合材料和石墨烯导热膜,服务新能源汽车轻量化。
会议要求各部门压实责任,确保各项任务落地见效。
上一篇:我市举办科技活动周
版权所有 市科学技术局 联系电话:0000-1234567
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    if not VENV or not LABEL_STUDIO.exists():
        pytest.skip("no Label Studio venv: set FIC_LABEL_STUDIO_VENV=\"$(bash tests/label_studio_venv.sh)\" "
                    "(.ci/run does)")
    import httpx

    home = tmp_path_factory.mktemp("label-studio-home")
    port = _free_port()
    token = secrets.token_hex(20)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE"}}
    env.update({
        "HOME": str(home),
        "LABEL_STUDIO_BASE_DATA_DIR": str(home / "data"),  # SQLite database and media
        "LABEL_STUDIO_USERNAME": "reviewer@example.com",
        "LABEL_STUDIO_PASSWORD": secrets.token_urlsafe(16),
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",  # "Authorization: Token ..." works from the start
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    })
    log_path = home / "label-studio.log"
    started = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(LABEL_STUDIO), "start", "--no-browser", "--internal-host", "127.0.0.1",
                                 "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=home, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}, timeout=120)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"label-studio exited with {proc.returncode}:\n"
                            f"{log_path.read_text(errors='replace')[-3000:]}")
            try:
                if client.get("/api/projects").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"label-studio not ready in {START_TIMEOUT_S} s:\n"
                            f"{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(2)
        print(f"\nlabel-studio ready in {time.perf_counter() - started:.0f} s at {base}")
        yield client
    finally:
        client.close()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.poll() is not None  # the server is stopped


def test_round_trip(label_studio, tiny_artifact, tmp_path) -> None:
    from runtime.taxonomy import load_taxonomy
    from training.config import load_config
    from training.data import load_examples
    from training.review import main as review

    client = label_studio
    # 1. Score a new crawl with evidence and export the units worth reviewing.
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    (crawl / "page.txt").write_text(PAGE, encoding="utf-8")
    scored = tmp_path / "scored" / "units.jsonl"
    result = subprocess.run([sys.executable, "-m", "serving.batch", str(crawl), "-o", str(scored), "--model",
                             str(tiny_artifact), "--precision", "fp32", "--no-progress", "--explain"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    export = tmp_path / "review" / "crawl.json"
    assert review(["export", str(scored), "-n", "8", "-o", str(export), "--model", str(tiny_artifact)]) == 0
    tasks = json.loads(export.read_text(encoding="utf-8"))
    assert len(tasks) == 8
    spans = {t["data"]["text"]: [r for r in t["predictions"][0]["result"] if r["type"] == "labels"] for t in tasks}
    assert any(spans.values())  # the model's evidence rides along as pre-annotated spans

    # 2. A project with our labelling config and instructions; import the tasks with their predictions.
    response = client.post("/api/projects", json={
        "title": "future industries review",
        "label_config": export.with_name("crawl.label_config.xml").read_text(encoding="utf-8"),
        "expert_instruction": export.with_name("crawl.instructions.html").read_text(encoding="utf-8"),
        "show_instruction": True,
    })
    assert response.status_code == 201, response.text
    project = response.json()["id"]
    response = client.post(f"/api/projects/{project}/import", json=tasks)
    assert response.status_code == 201, response.text
    assert response.json()["task_count"] == 8 and response.json()["prediction_count"] == 8

    # 3. Annotate three tasks through the API, as an annotator would in the browser.
    listed = client.get("/api/tasks", params={"project": project, "page_size": 100}).json()["tasks"]
    assert len(listed) == 8 and all(t["total_predictions"] == 1 for t in listed)
    by_text = {t["data"]["text"]: t for t in listed}
    # Label Studio kept the span regions of the predictions as sent.
    for text, task in by_text.items():
        (stored,) = client.get(f"/api/tasks/{task['id']}").json()["predictions"]
        assert [r["value"] for r in stored["result"] if r["type"] == "labels"] == [r["value"] for r in spans[text]]
    answers = {}
    for text, task in list(by_text.items())[:3]:
        if "氢能" in text or "燃料电池" in text:
            labels = ["future_energy"]
        elif "卫星" in text or "无人机" in text:
            labels = ["future_space", "future_information"]
        elif any(w in text for w in ("碳纤维", "石墨烯")):
            labels = ["future_materials", "future_energy"]
        elif any(w in text for w in ("基因", "细胞", "生物医药")):
            labels = ["future_health"]
        elif any(w in text for w in ("芯片", "类脑")):
            labels = ["future_information"]
        else:
            labels = ["other"]
        # The reviewer keeps the model's first evidence span (if any) beside the choices; import reads the choices.
        kept = [{k: r[k] for k in ("from_name", "to_name", "type", "value")} for r in spans[text][:1]]
        response = client.post(f"/api/tasks/{task['id']}/annotations/", json={"result": [
            {"from_name": "labels", "to_name": "text", "type": "choices", "value": {"choices": labels}}, *kept]})
        assert response.status_code == 201, response.text
        answers[text] = labels

    # 4. Export the project as Label Studio JSON (annotated tasks only) and import it as reviewed labels.
    response = client.get(f"/api/projects/{project}/export", params={"exportType": "JSON"})
    assert response.status_code == 200, response.text
    ls_export = tmp_path / "project-export.json"
    ls_export.write_bytes(response.content)
    assert len(json.loads(response.content)) == 3
    reviewed_dir = tmp_path / "reviewed"
    assert review(["import", str(ls_export), "--name", "roundtrip", "--out-dir", str(reviewed_dir)]) == 0
    records = [json.loads(x) for x in (reviewed_dir / "roundtrip.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["text"]: r["labels"] for r in records} == {
        t: sorted(labels, key=load_taxonomy().all_labels.index) for t, labels in answers.items()}
    for r in records:
        assert r["source"] == "reviewed" and r["doc"] == "crawl/page.txt" and r["url"] is None
        assert isinstance(r["start"], int) and r["end"] > r["start"] and r["annotator"].startswith("label-studio-user")
        assert PAGE[r["start"]:r["end"]].strip()  # the span points into the page

    # 5. Retrain the tiny config with the reviewed file; its units are in the data, as real (non-authored) units.
    files = f"data.label_files=[labels/seed_units.jsonl, \"?{reviewed_dir}/*.jsonl\"]"
    cfg = load_config("configs/offline-small.yaml", [files])
    examples = load_examples(cfg.data.label_files, load_taxonomy(cfg.data.taxonomy))
    assert sum(ex.source == "reviewed" for ex in examples) == 3
    artifact = train_tiny(tmp_path / "retrained", files)
    report = (artifact / "report.md").read_text(encoding="utf-8")
    assert "'reviewed'" in report  # the split summary counts units by source
    seen = sum(int(n) for n in re.findall(r"'reviewed': (\d+)", report))
    assert seen == 3
