"""Bounded load test: 32 users against a real `bentoml serve` on 127.0.0.1 for a fixed time.

    python -m bench.load                                  # artifacts/offline-e5-small, 60 s
    python -m bench.load --duration 30 --artifact artifacts/offline-small
    python -m bench.load --users 8 --page-share 0

The artifact is packaged into a temporary BENTOML_HOME and served on a free loopback
port. Each user (an asyncio task with its own keep-alive connection) sends, back to
back, a mix of /classify requests (1-4 units from the labelled corpus), whole seed pages
to /classify_page (--page-share of requests) and /metadata (1 in 50). The run stops
after --duration seconds; requests still in flight are counted if they finish within
the grace period. Writes bench/results/load.json: requests and failures per endpoint
(a failure = a transport error or any status other than 200), p50/p99 latency, and
the RSS of every worker process (VmRSS and peak VmHWM from /proc/<pid>/status) before
and after the load. The load generator shares the CPU with the server, so latencies
are upper bounds for a server on its own cores.
"""

from __future__ import annotations

import sys

if not __package__:  # run as a file, bench/load.py would not find the bench package
    sys.exit("run it from the repository root as a module: python -m bench.load --help")

import argparse
import asyncio
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import (
    DEFAULT_ARTIFACT,
    RESULTS_DIR,
    ROOT,
    benchmark_units,
    format_table,
    header,
    positive_int,
    require_artifact,
    write_results,
)
from bench.serving import HOST, free_port, package_model, stop, wait_ready

SEEDS = sorted((ROOT / "seeds").glob("*.txt"))


def worker_pids(serve_pid: int) -> list[int]:
    """Processes under `bentoml serve` that run the service (the ones holding the model)."""
    import psutil

    pids = []
    for child in psutil.Process(serve_pid).children(recursive=True):
        try:
            if "_bentoml_impl.worker.service" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in KiB, read from /proc/<pid>/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


async def run_load(url: str, users: int, duration: float, page_share: float, seed: int) -> dict:
    import httpx

    rng = random.Random(seed)
    units = benchmark_units(2000, seed=seed)
    pages = [p.read_text(encoding="utf-8") for p in SEEDS]
    stats: dict[str, dict] = {name: {"latencies": [], "failures": 0, "statuses": {}}
                              for name in ("classify", "classify_page", "metadata")}
    deadline = time.monotonic() + duration

    async def user(index: int) -> None:
        local = random.Random(rng.random())
        async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as client:
            count = 0
            while time.monotonic() < deadline:
                count += 1
                roll = local.random()
                if count % 50 == 0:
                    name, request = "metadata", client.get("/metadata")
                elif roll < page_share:
                    name, request = "classify_page", client.post("/classify_page", json={"text": local.choice(pages)})
                else:
                    texts = local.sample(units, local.randint(1, 4))
                    name, request = "classify", client.post("/classify", json={"texts": texts})
                started = time.perf_counter()
                try:
                    response = await request
                    status = response.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                entry = stats[name]
                entry["latencies"].append(time.perf_counter() - started)
                entry["statuses"][str(status)] = entry["statuses"].get(str(status), 0) + 1
                if status != 200:
                    entry["failures"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(user(i) for i in range(users)))
    elapsed = time.perf_counter() - started
    summary = {}
    for name, entry in stats.items():
        lat = entry["latencies"]
        summary[name] = {"requests": len(lat), "failures": entry["failures"], "statuses": entry["statuses"],
                         "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
                         "max_ms": round(max(lat) * 1000, 1) if lat else None}
    all_lat = [x for entry in stats.values() for x in entry["latencies"]]
    total = {"requests": len(all_lat), "failures": sum(e["failures"] for e in stats.values()),
             "requests_per_s": round(len(all_lat) / elapsed, 1), "seconds": round(elapsed, 1),
             "p50_ms": percentile(all_lat, 50), "p99_ms": percentile(all_lat, 99)}
    return {"total": total, "endpoints": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="trained artifact folder")
    parser.add_argument("--duration", type=positive_int, default=60, help="seconds of load (default 60)")
    parser.add_argument("--users", type=positive_int, default=32, help="concurrent users (default 32)")
    parser.add_argument("--page-share", type=float, default=0.1,
                        help="share of requests that send a whole seed page to /classify_page (default 0.1)")
    parser.add_argument("--precision", default="fp32", help="FIC_PRECISION for the server (default fp32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "load.json")
    args = parser.parse_args(argv)
    require_artifact(args.artifact)

    with tempfile.TemporaryDirectory(prefix="fic-load-") as tmp:
        home = Path(tmp) / "bentoml"
        tag = package_model(args.artifact.resolve(), home, args.precision)
        port = free_port()
        url = f"http://{HOST}:{port}"
        log_path = Path(tmp) / "serve.log"
        env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True", "FIC_MODEL": tag,
               "FIC_PRECISION": args.precision}
        with log_path.open("w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve",
                                     "serving.service:FutureIndustryClassifier",
                                     "--host", HOST, "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                wait_ready(proc, url, log_path, timeout=180)
                pids = worker_pids(proc.pid)
                before = {pid: memory(pid) for pid in pids}
                print(f"load: {args.users} users for {args.duration} s against {url} (workers {pids})",
                      file=sys.stderr, flush=True)
                result = asyncio.run(run_load(url, args.users, args.duration, args.page_share, args.seed))
                after = {pid: memory(pid) for pid in worker_pids(proc.pid)}
            finally:
                stop(proc)
        errors = [line for line in log_path.read_text(errors="replace").splitlines() if "[ERROR]" in line]

    payload = header("load", {"artifact": str(args.artifact), "users": args.users, "duration_s": args.duration,
                              "page_share": args.page_share, "precision": args.precision, "seed": args.seed})
    payload.update(result)
    payload["worker_memory_kib"] = {"before": {str(k): v for k, v in before.items()},
                                    "after": {str(k): v for k, v in after.items()},
                                    "workers_restarted": sorted(set(after) ^ set(before))}
    payload["server_error_log_lines"] = len(errors)
    path = write_results(args.out, payload)

    rows = [[name, e["requests"], e["failures"], e["p50_ms"], e["p99_ms"]] for name, e in result["endpoints"].items()]
    rows.append(["all", result["total"]["requests"], result["total"]["failures"], result["total"]["p50_ms"],
                 result["total"]["p99_ms"]])
    print(format_table(["endpoint", "requests", "failures", "p50 ms", "p99 ms"], rows))
    for pid in before:
        print(f"worker {pid}: RSS {before[pid].get('VmRSS')} KiB before, "
              f"{after.get(pid, {}).get('VmRSS')} KiB after (peak {after.get(pid, {}).get('VmHWM')} KiB)")
    print(f"{result['total']['requests_per_s']} requests/s; results in {path.relative_to(ROOT)}")
    return 1 if result["total"]["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
