"""The Ray Data engine gives the in-process engine's output, resumes after a kill, and skips bad files with reasons.

Runs on a local Ray (2 CPUs, no dashboard) started by this module and shut down at its end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data", reason="the [ray] extra is not installed: pip install -e '.[ray]'")

from serving.batch import run  # noqa: E402

pytestmark = pytest.mark.slow

SEEDS = sorted(Path("seeds").glob("*.txt"))


@pytest.fixture(scope="module")
def ray_address():
    import ray

    # Loopback only: by default Ray binds its head to the machine's network address.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def generated_pages(n: int) -> list[dict]:
    """Pages recombined from the seed pages' lines, with urls and ids."""
    lines = [line for path in SEEDS for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = np.random.default_rng(0)
    return [{"id": f"gen{i:03d}", "url": f"http://example.com/{i}",
             "text": "\n".join(lines[j] for j in rng.choice(len(lines), size=int(rng.integers(1, 12))))}
            for i in range(n)]


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_output(a: Path, b: Path) -> None:
    """Same documents, units, labels and summaries; scores equal within float tolerance."""
    for name in (a.name, a.stem + ".pages.jsonl"):
        x, y = load(a.with_name(name)), load(b.with_name(name))
        assert [r["doc_id"] for r in x] == [r["doc_id"] for r in y]
        for p, q in zip(x, y):
            assert {k: v for k, v in p.items() if k != "scores"} == {k: v for k, v in q.items() if k != "scores"}
            if "scores" in p:
                assert np.allclose(list(p["scores"].values()), list(q["scores"].values()), atol=1e-4)


def test_ray_engine_matches_in_process_and_skips_bad_files(ray_address, tiny_artifact, tmp_path) -> None:
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for path in SEEDS:
        (crawl / path.name).write_bytes(path.read_bytes())
    with (crawl / "generated.jsonl").open("w", encoding="utf-8") as handle:
        for page in generated_pages(60):
            handle.write(json.dumps(page, ensure_ascii=False) + "\n")
        handle.write("{not json\n")
    (crawl / "empty.txt").write_bytes(b"")
    (crawl / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)
    (crawl / "gbk.txt").write_bytes("推动氢能产业发展。版权所有。".encode("gbk"))
    (crawl / "escape.txt").symlink_to(SEEDS[0].resolve())

    local, remote = tmp_path / "local" / "units.jsonl", tmp_path / "ray" / "units.jsonl"
    a = run([str(crawl)], local, str(tiny_artifact), precision="fp32", chunk_units=256)
    b = run([str(crawl)], remote, str(tiny_artifact), precision="fp32", engine="ray", actors=2)
    assert a.line() == b.line()
    assert (a.written, len(a.skipped), len(a.failed)) == (5 + 60 + 1, 3, 1)
    assert_same_output(local, remote)
    reasons = {Path(e["source"]).name: e["reason"] for e in load(remote.with_name("units.errors.jsonl"))}
    assert reasons["empty.txt"] == "empty" and "binary" in reasons["binary.txt"]
    assert "outside the input folders" in reasons["escape.txt"]
    assert any("not valid JSON" in reason for reason in reasons.values())
    # The same outcomes; Ray reports the driver's path checks before the read tasks' outcomes.
    key = lambda e: (e["source"], e["status"])  # noqa: E731
    assert sorted(load(local.with_name("units.errors.jsonl")), key=key) == \
           sorted(load(remote.with_name("units.errors.jsonl")), key=key)

    # The same crawl as a file:// URI (read through pyarrow.fs in Ray's tasks), into Parquet parts.
    from serving.output import read_units

    parquet = tmp_path / "ray-parquet" / "units.parquet"
    (crawl / "escape.txt").unlink()  # symlink rules are for local paths; Arrow lists what a link points to
    c = run([crawl.as_uri()], parquet, str(tiny_artifact), precision="fp32", engine="ray", actors=1)
    assert (c.written, c.units) == (a.written, a.units)
    expected, got = load(local), read_units(parquet)
    assert ([(r["doc_id"], r["index"], r["labels"]) for r in got]
            == [(r["doc_id"], r["index"], r["labels"]) for r in expected])
    assert np.allclose([list(r["scores"].values()) for r in got], [list(r["scores"].values()) for r in expected],
                       atol=1e-4)


def test_killed_ray_run_resumes_to_the_clean_output(ray_address, tiny_artifact, tmp_path) -> None:
    crawl = tmp_path / "crawl.jsonl"
    with crawl.open("w", encoding="utf-8") as handle:
        for page in generated_pages(240):
            handle.write(json.dumps(page, ensure_ascii=False) + "\n")
    clean = tmp_path / "clean" / "units.jsonl"
    run([str(crawl)], clean, str(tiny_artifact), precision="fp32")

    out = tmp_path / "resumed" / "units.jsonl"
    command = [sys.executable, "-m", "serving.batch", str(crawl), "-o", str(out), "--model", str(tiny_artifact),
               "--precision", "fp32", "--engine", "ray", "--address", ray_address, "--no-progress"]
    log = tmp_path / "first.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    summaries = out.with_name("units.pages.jsonl")
    deadline = time.time() + 300  # generous: on two busy cores Ray's actors take a while to start
    while time.time() < deadline and proc.poll() is None and \
            (not summaries.exists() or len(summaries.read_bytes().splitlines()) < 10):
        time.sleep(0.05)
    exited_early = proc.poll()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert exited_early is None, f"the first run ended by itself (exit {exited_early}):\n{log.read_text()[-2000:]}"
    finished = len(summaries.read_bytes().splitlines()) if summaries.exists() else 0
    assert 10 <= finished < 240, f"the run was not interrupted part-way ({finished}):\n{log.read_text()[-2000:]}"

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skipped {finished} (already in output)" in result.stderr
    assert f"written {240 - finished};" in result.stderr
    assert_same_output(clean, out)


def test_without_ray_the_engine_says_how_to_install(tiny_artifact, tmp_path) -> None:
    code = ("import sys; sys.modules['ray'] = None; from serving.batch import main; "
            f"sys.exit(main(['seeds', '-o', {str(tmp_path / 'u.jsonl')!r}, '--model', {str(tiny_artifact)!r}, "
            "'--engine', 'ray', '--precision', 'fp32']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --engine ray needs Ray Data, which is not installed: pip install -e '.[ray]' "
        "(or pip install 'ray[data]==2.60.0').")


def test_ray_actors_reuse_scores_and_share_a_cache_folder(ray_address, tiny_artifact, tmp_path) -> None:
    crawl = tmp_path / "generated.jsonl"
    with crawl.open("w", encoding="utf-8") as handle:
        for page in generated_pages(60):
            handle.write(json.dumps(page, ensure_ascii=False) + "\n")
    local = tmp_path / "local" / "units.jsonl"
    run([str(crawl)], local, str(tiny_artifact), precision="fp32", reuse=False)
    cache = tmp_path / "cache"
    first = run([str(crawl)], tmp_path / "ray1" / "units.jsonl", str(tiny_artifact), precision="fp32",
                engine="ray", actors=2, cache=cache)
    assert first.reuse.units == first.units and 0 < first.reuse.computed < first.units
    assert_same_output(local, tmp_path / "ray1" / "units.jsonl")
    second = run([str(crawl)], tmp_path / "ray2" / "units.jsonl", str(tiny_artifact), precision="fp32",
                 engine="ray", actors=2, cache=cache)
    assert second.reuse.computed == 0 and second.reuse.from_disk > 0
    assert_same_output(local, tmp_path / "ray2" / "units.jsonl")
