"""Serving speed: a real `bentoml serve` with adaptive batching on and off, under load.

    python -m bench.serving                                  # trained model, fp32, 400 requests per level
    python -m bench.serving --model base --precision bf16
    python -m bench.serving --requests 20 --warmup 4 --repeats 1 --concurrency 1,8
    python -m bench.serving --workers 2 --threads 1 --out bench/results/serving-2x1.json

The trained artifact (or the BERT-base-sized random one) is packaged into a temporary
BENTOML_HOME and served on 127.0.0.1 twice, FIC_BATCHING=on then off. Each server gets
single-text /classify requests at each concurrency level; throughput and client-side
p50/p95/p99 latency are the medians of the repeats. For reference the same units are
scored in-process: the offline batch scorer's throughput (Classifier.predict on the
list) and one unit's own time (Classifier.predict([unit])).
"""

from __future__ import annotations

import sys

if not __package__:  # run as a file, bench/serving.py would shadow the serving package
    sys.exit("run it from the repository root as a module: python -m bench.serving --help")

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from bench.common import (
    DEFAULT_ARTIFACT,
    RESULTS_DIR,
    ROOT,
    benchmark_units,
    format_table,
    header,
    median,
    parse_choices,
    positive_int,
    quiet_transformers,
    require_artifact,
    time_call,
    write_base_artifact,
    write_results,
)
from runtime.precision import CHOICES

HOST = "127.0.0.1"  # loopback only: the benchmark never listens on or talks to another interface
MODEL_NAME = "fic-bench"


# ----------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def package_model(artifact: Path, bento_home: Path, precision: str | None = None) -> str:
    """python -m serving.package into the temporary store (deciding the precision with auto unless one is
    given); returns the model tag."""
    pinned = ["--precision", precision] if precision else []
    result = subprocess.run([sys.executable, "-m", "serving.package", str(artifact), "--name", MODEL_NAME, *pinned],
                            cwd=ROOT,
                            env={**os.environ, "BENTOML_HOME": str(bento_home), "BENTOML_DO_NOT_TRACK": "True"},
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"python -m serving.package failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


def stop(proc: subprocess.Popen) -> None:
    """Stop the server and its workers: bentoml serve forks, so signal the whole process group."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_ready(proc: subprocess.Popen, url: str, log_path: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"bentoml serve was not ready after {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by a process and all its live descendants, from /proc:
    the server's own cost (arbiter and workers), whatever the load generator beside it does."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended between listing and reading
            continue
        # fields after "comm)": state ppid pgrp session ... utime(11) stime(12)
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks

    def in_tree(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parent.get(pid, 0)
        return False

    return sum(seconds for pid, seconds in cpu.items() if in_tree(pid))


@contextmanager
def bentoml_server(env: dict, log_path: Path, ready_timeout: float) -> Iterator[tuple[str, float, int]]:
    """Start `bentoml serve` on a free loopback port; yield (url, seconds to ready, its pid);
    always stop it."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    started = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "serving.service:FutureIndustryClassifier",
             "--host", HOST, "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_ready(proc, url, log_path, ready_timeout)
            yield url, time.perf_counter() - started, proc.pid
        finally:
            stop(proc)


def server_env(args, bento_home: Path, tag: str, batching: bool) -> dict:
    env = {**os.environ, "BENTOML_HOME": str(bento_home), "BENTOML_DO_NOT_TRACK": "True", "FIC_MODEL": tag,
           "FIC_BATCHING": "on" if batching else "off", "FIC_PRECISION": args.precision,
           "FIC_MAX_BATCH_SIZE": str(args.max_batch_size)}
    if args.max_latency_ms is not None:
        env["FIC_MAX_LATENCY_MS"] = str(args.max_latency_ms)
    if args.threads is not None:
        env["FIC_THREADS"] = str(args.threads)
    env["FIC_WORKERS"] = str(args.workers)
    return env


# ----------------------------------------------------------------------------- load


@dataclass
class LoadRun:
    latencies: list[float]  # seconds, successful requests only
    errors: int
    first_error: str | None
    wall: float

    def summary(self) -> dict:
        lat = np.asarray(self.latencies) * 1000
        pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: None)
        return {"requests": len(self.latencies) + self.errors, "errors": self.errors, "first_error": self.first_error,
                "seconds": self.wall, "throughput_rps": len(self.latencies) / self.wall,
                "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99)}


async def _drive(url: str, texts: list[str], concurrency: int, timeout: float) -> LoadRun:
    """`concurrency` clients, each sending one single-text request at a time until the texts run out."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    pending = iter(texts)  # shared: every text is sent exactly once, by whichever client is free
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout, trust_env=False) as client:

        async def client_loop() -> None:
            for text in pending:
                started = time.perf_counter()
                try:
                    response = await client.post("/classify", json={"texts": [text]})
                    ok = response.status_code == 200 and len(response.json()) == 1
                    detail = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, detail = False, f"{type(exc).__name__}: {exc}"
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors.append(detail)

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return LoadRun(latencies, len(errors), errors[0] if errors else None, wall)


def measure_level(url: str, units: list[str], warmup: list[str], concurrency: int, repeats: int, timeout: float,
                  server_pid: int) -> dict:
    asyncio.run(_drive(url, warmup, concurrency, timeout))  # connections opened, batcher and kernels warmed
    runs = []
    for _ in range(repeats):
        cpu_before = tree_cpu_seconds(server_pid)
        run = asyncio.run(_drive(url, units, concurrency, timeout)).summary()
        run["server_cpu_ms_per_unit"] = (tree_cpu_seconds(server_pid) - cpu_before) * 1000 / len(units)
        runs.append(run)
    out = {key: median([r[key] for r in runs]) if all(r[key] is not None for r in runs) else None
           for key in ("throughput_rps", "p50_ms", "p95_ms", "p99_ms", "server_cpu_ms_per_unit")}
    out["errors"] = sum(r["errors"] for r in runs)
    out["first_error"] = next((r["first_error"] for r in runs if r["first_error"]), None)
    out["repeats"] = runs
    return out


def benchmark_server(args, bento_home: Path, tag: str, batching: bool, units: list[str], log_dir: Path) -> dict:
    import httpx

    name = "on" if batching else "off"
    log_path = log_dir / f"serve-batching-{name}.log"
    with bentoml_server(server_env(args, bento_home, tag, batching), log_path,
                        args.ready_timeout) as (url, startup, server_pid):
        metadata = httpx.get(f"{url}/metadata", timeout=30, trust_env=False).json()
        warmup = units[: args.warmup]
        levels = {}
        for concurrency in args.concurrency:
            levels[str(concurrency)] = measure_level(url, units, warmup, concurrency, args.repeats,
                                                     args.request_timeout, server_pid)
            level = levels[str(concurrency)]
            print(f"  batching {name}, concurrency {concurrency}: {level['throughput_rps']:.1f} req/s, "
                  f"server CPU {level['server_cpu_ms_per_unit']:.1f} ms/unit"
                  + (f", {level['errors']} errors" if level["errors"] else ""), flush=True)
    return {"startup_seconds": startup, "workers": args.workers,
            "metadata": {k: metadata.get(k) for k in ("model", "precision", "threads", "batching")},
            "levels": levels}


# ----------------------------------------------------------------------------- in-process reference


def offline_reference(artifact: Path, units: list[str], precision: str, batch_size: int, repeats: int,
                      threads: int | None) -> dict:
    """The batch scorer's throughput and one unit's own time, in this process, same precision."""
    from runtime.classifier import Classifier
    from runtime.threads import configure_threads

    threads = configure_threads(threads)  # as many threads as the server's worker gets
    clf = Classifier.from_artifact(artifact, batch_size=batch_size, precision=precision)
    clf.predict(units[:batch_size], already_clean=True)  # warm-up
    batch_seconds, single_medians, cpu_ms = [], [], []
    for _ in range(repeats):
        cpu_before = time.process_time()  # every thread of this process
        batch_seconds.append(time_call(lambda: clf.predict(units, already_clean=True))[0])
        cpu_ms.append((time.process_time() - cpu_before) * 1000 / len(units))
        single_medians.append(median([time_call(lambda: clf.predict([unit], already_clean=True))[0] for unit in units]))
    return {"precision": clf.precision, "threads": threads, "batch_size": batch_size, "units": len(units),
            "batch_seconds": batch_seconds, "batch_throughput_ups": len(units) / median(batch_seconds),
            "batch_cpu_ms_per_unit": median(cpu_ms),
            "single_unit_ms_per_repeat": [s * 1000 for s in single_medians],
            "single_unit_ms": median(single_medians) * 1000}


def ratios(servers: dict, offline: dict, low: int, high: int) -> dict:
    def level(name: str, concurrency: int) -> dict:
        return servers.get(name, {}).get("levels", {}).get(str(concurrency), {})

    def ratio(a, b):
        return a / b if a is not None and b else None

    on_hi, off_hi = level("on", high).get("throughput_rps"), level("off", high).get("throughput_rps")
    cpu = {f"server CPU per unit @{c} batching {name} / offline CPU per unit":
           ratio(level(name, int(c)).get("server_cpu_ms_per_unit"), offline["batch_cpu_ms_per_unit"])
           for name, server in servers.items() for c in server.get("levels", {})}
    return {
        **cpu,
        f"service@{high} batching on / offline batch throughput": ratio(on_hi, offline["batch_throughput_ups"]),
        f"batching on / off @{high} (throughput)": ratio(on_hi, off_hi),
        f"p99@{low} batching on / single-unit time": ratio(level("on", low).get("p99_ms"), offline["single_unit_ms"]),
        f"p99@{low} batching off / single-unit time": ratio(level("off", low).get("p99_ms"), offline["single_unit_ms"]),
    }


# ----------------------------------------------------------------------------- report


def print_report(report: dict) -> None:
    rows = []
    for name, server in report["servers"].items():
        for concurrency, level in server["levels"].items():
            rows.append([name, int(concurrency), level["throughput_rps"], level["p50_ms"], level["p95_ms"],
                         level["p99_ms"], level["server_cpu_ms_per_unit"], level["errors"]])
    s = report["settings"]
    print(f"\n{report['model']['description']}, precision {s['precision']}, {s['requests']} requests per level "
          f"x {s['repeats']} repeats (medians)")
    print(format_table(["batching", "concurrency", "req/s", "p50 ms", "p95 ms", "p99 ms", "server CPU ms/unit",
                        "errors"], rows))
    for name, server in report["servers"].items():
        for concurrency, level in server["levels"].items():
            if level["first_error"]:
                print(f"batching {name} @{concurrency}: {level['errors']} errors, first: {level['first_error'][:160]}")
                if name == "on" and level["first_error"].startswith("HTTP 503"):
                    # CorkDispatcher cancels queued requests it expects to finish after max_latency.
                    print("  (503 with batching on: BentoML's batcher shed requests it expected to miss "
                          "FIC_MAX_LATENCY_MS; see --max-latency-ms)")
    offline = report["offline"]
    print(f"offline batch scorer: {offline['batch_throughput_ups']:.1f} units/s (batch {offline['batch_size']}, "
          f"{offline['precision']}, {offline['batch_cpu_ms_per_unit']:.1f} CPU ms/unit); single unit in-process: "
          f"{offline['single_unit_ms']:.1f} ms")
    for name, value in report["ratios"].items():
        print(f"{name}: {value:.2f}" if value is not None else f"{name}: -")
    if report["levels_with_errors"]:
        print(f"caution: {', '.join(report['levels_with_errors'])} had errors; their throughput counts answered "
              "requests only, so ratios using them are not like-for-like")


def concurrency_levels(value: str) -> list[int]:
    levels = sorted({positive_int(item) for item in value.split(",") if item.strip()})
    if not levels:
        raise argparse.ArgumentTypeError("give at least one level, e.g. 1,8,32")
    return levels


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving",
        description="Throughput and p50/p95/p99 latency of a real bentoml serve (127.0.0.1) with adaptive batching "
                    "on and off, at several concurrency levels, against the in-process batch scorer.",
    )
    parser.add_argument("--model", choices=["trained", "base"], default="trained",
                        help="trained: the --artifact; base: BERT-base-sized random weights (default trained)")
    parser.add_argument("--precision", choices=CHOICES, default="fp32",
                        help="FIC_PRECISION for the server and the in-process reference (default fp32)")
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT,
                        help=f"trained artifact folder (default {DEFAULT_ARTIFACT})")
    parser.add_argument("--requests", type=positive_int, default=400,
                        help="timed requests per level and repeat (default 400)")
    parser.add_argument("--warmup", type=positive_int, default=32, help="untimed requests per level first (default 32)")
    parser.add_argument("--concurrency", type=concurrency_levels, default=[1, 8, 32],
                        help="comma-separated concurrency levels (default 1,8,32)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed repeats per level; medians reported (default 3)")
    parser.add_argument("--batching", type=lambda v: parse_choices(v, ["on", "off"]), default=["on", "off"],
                        help="which servers to run (default on,off)")
    parser.add_argument("--max-batch-size", type=positive_int, default=64,
                        help="FIC_MAX_BATCH_SIZE, also the offline batch size (default 64)")
    parser.add_argument("--max-latency-ms", type=positive_int, default=None,
                        help="FIC_MAX_LATENCY_MS (default: the service's)")
    parser.add_argument("--threads", type=positive_int, default=None, help="FIC_THREADS (default: the CPU quota)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="FIC_WORKERS: worker processes of the server (default 1); the in-process reference "
                             "stays one process")
    parser.add_argument("--ready-timeout", type=float, default=300, help="seconds to wait for /readyz (default 300)")
    parser.add_argument("--request-timeout", type=float, default=120,
                        help="seconds per request before it counts as an error")
    parser.add_argument("--seed", type=int, default=0, help="seed of the unit order and the random model (default 0)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default bench/results/serving-MODEL.json)")
    return parser.parse_args(argv)


def _terminate(signum, frame):  # noqa: ARG001 - signal handler signature
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out or RESULTS_DIR / f"serving-{args.model}.json"
    require_artifact(args.artifact)
    signal.signal(signal.SIGTERM, _terminate)
    quiet_transformers()
    units = benchmark_units(args.requests, args.seed)
    report = header("serving", {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        artifact = (args.artifact if args.model == "trained"
                    else write_base_artifact(args.artifact, work / "bert-base-sized", args.seed))
        report["model"] = {"name": args.model,
                           "artifact": (str(args.artifact) if args.model == "trained"
                                        else "temporary (random weights)"),
                           "description": ("the trained artifact" if args.model == "trained"
                                           else "BERT-base-sized, random weights")}
        print(f"in-process reference on {len(units)} units ...", flush=True)
        report["offline"] = offline_reference(artifact, units, args.precision, args.max_batch_size, args.repeats,
                                              args.threads)
        tag = package_model(artifact, work / "bentoml", args.precision)
        report["model"]["tag"] = tag
        report["servers"] = {}
        for name in args.batching:
            print(f"bentoml serve, batching {name} ...", flush=True)
            report["servers"][name] = benchmark_server(args, work / "bentoml", tag, name == "on", units, work)
        report["ratios"] = ratios(report["servers"], report["offline"], min(args.concurrency), max(args.concurrency))
        # Throughput counts answered requests only; a level that shed requests is not a clean comparison.
        report["levels_with_errors"] = [f"{name}@{c}" for name, server in report["servers"].items()
                                        for c, level in server["levels"].items() if level["errors"]]
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_results(args.out, report)
    print_report(report)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
