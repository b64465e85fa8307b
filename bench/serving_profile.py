"""Where a serving worker's CPU goes under load: py-spy on a real `bentoml serve`, stacks sorted into stages.

    python -m bench.serving_profile                       # artifacts/offline-e5-small, 32 clients, 20 s
    python -m bench.serving_profile --clients 8 --seconds 30

The artifact is packaged (fp32) into a temporary BentoML store and served on a free loopback port;
--clients clients send single-text /classify requests back to back while `py-spy record --native
--threads` samples the worker (pip install py-spy; it needs ptrace, i.e. root or CAP_SYS_PTRACE).
Native stacks need py-spy to pause the worker for each sample, so the worker runs slower while
sampled: read the shares, not the CPU per unit (bench.serving measures that unsampled). Each
sample of the worker's Python threads is put in one stage: waiting for the GIL or idle when its
innermost frames wait, else the first rule its stack matches for its thread (the model thread or
the event loop). Shares of the busy samples and the top leaf functions of each stage go to
bench/results/serving-profile.json. torch's OpenMP helper threads run no Python and are not
sampled; the worker's CPU from /proc counts them.
"""

from __future__ import annotations

import sys

if not __package__:
    sys.exit("run it from the repository root as a module: python -m bench.serving_profile --help")

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from bench.common import (
    DEFAULT_ARTIFACT,
    RESULTS_DIR,
    benchmark_units,
    format_table,
    header,
    positive_int,
    require_artifact,
    write_results,
)
from bench.load import worker_pids
from bench.serving import bentoml_server, package_model, tree_cpu_seconds

# Innermost frames of a thread with nothing to do (waiting for work, a socket, a timer): not CPU.
IDLE_LEAVES = ("epoll_wait", "select_epoll_poll", "SimpleQueue_get", "PyThread_acquire_lock_timed", "sem_clockwait",
               "poll (", "sleep")
GIL_WAIT = ("take_gil", "gil_scoped_release::~gil_scoped_release", "PyEval_RestoreThread", "PyEval_AcquireThread")
# (stage, substrings of a frame) for the model thread and for the event loop, first match wins.
MODEL_STAGES = [
    ("model thread: tokenisation", ("tokenizers", "Classifier.encode (", "PreTrainedTokenizer", "pad (transformers")),
    ("model thread: TF-IDF half", ("lexical.py",)),
    ("model thread: forward pass (torch)", ("encoder_probabilities", "forward (", "libtorch", "mkl_", "gomp")),
    ("model thread: decide + results", ("decide.py", "to_dict")),
]
LOOP_STAGES = [
    ("event loop: garbage collection", ("gc_collect",)),
    ("event loop: our guards (body read, admission)", ("serving/guards.py", "explain_route.py")),
    ("event loop: validation + JSON (pydantic, serde)", ("pydantic", "serde", "json")),
    ("event loop: BentoML batcher + dispatch", ("dispatcher.py", "_bentoml_impl/server/app.py")),
    ("event loop: tracing, metrics, access log middleware", ("opentelemetry", "OpenTelemetry", "otel", "Metrics",
                                                              "AccessLog", "prometheus")),
    ("event loop: HTTP (uvicorn, starlette, h11)", ("uvicorn", "starlette", "h11", "httptools")),
]
IDLE = "idle (waiting for work)"


def stage_of(thread: str, frames: list[str]) -> str:
    """The stage of one sample of `thread`; `frames` innermost first."""
    if any(needle in frame for frame in frames[:4] for needle in GIL_WAIT):
        return "waiting for the GIL" + (" (model thread)" if thread.startswith("model") else " (event loop)")
    if any(needle in frame for frame in frames[:4] for needle in IDLE_LEAVES):
        return IDLE
    stages = MODEL_STAGES if thread.startswith("model") else LOOP_STAGES if thread == "MainThread" else []
    for frame in frames:  # the innermost frame any rule names decides: the most specific layer at work
        for stage, needles in stages:
            if any(needle in frame for needle in needles):
                return stage
    return f"{'model thread' if thread.startswith('model') else thread}: other"


def read_raw(path: Path) -> tuple[Counter, dict]:
    """py-spy's raw (collapsed) output -> samples per stage and the top leaf frames per stage."""
    stages: Counter = Counter()
    leaves: dict[str, Counter] = defaultdict(Counter)
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        parts = stack.split(";")
        thread = next((part.split(": ", 1)[1] for part in parts if part.startswith("thread (") and ": " in part), "")
        frames = [part for part in parts if not part.startswith(("thread (", "process "))]
        if not frames:
            continue
        stage = stage_of(thread, list(reversed(frames)))
        stages[stage] += int(count)
        leaves[stage][frames[-1][:120]] += int(count)
    return stages, leaves


async def drive(url: str, texts: list[str], clients: int, seconds: float) -> int:
    import httpx

    until = time.monotonic() + seconds
    answered = 0

    async def client(offset: int) -> None:
        nonlocal answered
        async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as http:
            index = offset
            while time.monotonic() < until:
                response = await http.post("/classify", json={"texts": [texts[index % len(texts)]]})
                if response.status_code == 503:  # refused for load (sampling slows the worker): retry, as asked
                    await asyncio.sleep(float(response.headers.get("retry-after", 1)))
                    continue
                response.raise_for_status()
                answered += 1
                index += clients

    await asyncio.gather(*(client(i) for i in range(clients)))
    return answered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="trained artifact folder")
    parser.add_argument("--clients", type=positive_int, default=32, help="concurrent single-text clients")
    parser.add_argument("--seconds", type=positive_int, default=20, help="seconds sampled (default 20)")
    parser.add_argument("--rate", type=positive_int, default=50,
                        help="py-spy samples per second (default 50; each pauses the worker to read its stacks)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serving-profile.json")
    parser.add_argument("--raw", type=Path, default=None, help="also keep py-spy's raw stacks here")
    args = parser.parse_args(argv)
    require_artifact(args.artifact)
    if shutil.which("py-spy") is None:
        parser.error("py-spy is not installed: pip install py-spy")

    texts = benchmark_units(2000)
    payload = header("serving_profile", {"artifact": str(args.artifact), "clients": args.clients,
                                         "seconds": args.seconds, "rate": args.rate})
    with tempfile.TemporaryDirectory(prefix="fic-profile-") as tmp:
        home = Path(tmp) / "bentoml"
        env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True",
               "FIC_MODEL": package_model(args.artifact.resolve(), home, "fp32")}
        with bentoml_server(env, Path(tmp) / "serve.log", ready_timeout=300) as (url, _, server_pid):
            asyncio.run(drive(url, texts, args.clients, 5))  # warm: connections, batcher training, kernels
            pids = worker_pids(server_pid)
            if not pids:
                raise SystemExit("no service worker found under bentoml serve")
            pid = pids[0]
            raw = Path(tmp) / "profile.txt"
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--native", "--threads",
                                    "--rate", str(args.rate), "--duration", str(args.seconds), "--format", "raw",
                                    "--output", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
            cpu_before = tree_cpu_seconds(pid)
            answered = asyncio.run(drive(url, texts, args.clients, args.seconds))
            cpu = tree_cpu_seconds(pid) - cpu_before
            _, err = spy.communicate(timeout=120)
            if not raw.is_file():
                raise SystemExit(f"py-spy wrote nothing: {err[-1000:]}")
            stages, leaves = read_raw(raw)
            if args.raw:
                shutil.copy(raw, args.raw)
    idle = stages.pop(IDLE, 0)
    total = sum(stages.values())
    payload["samples"] = {"busy": total, "idle": idle}
    payload["units_answered"] = answered
    payload["worker_cpu_ms_per_unit"] = round(1000 * cpu / max(answered, 1), 1)
    payload["stages"] = {stage: {"share": round(count / total, 4), "cpu_ms_per_unit":
                                 round(1000 * cpu * count / total / max(answered, 1), 2),
                                 "top_leaves": leaves[stage].most_common(5)}
                         for stage, count in stages.most_common()}
    path = write_results(args.out, payload)
    print(format_table(["stage", "share", "CPU ms/unit"],
                       [[stage, f"{v['share']:.1%}", v["cpu_ms_per_unit"]] for stage, v in payload["stages"].items()]))
    print(f"worker: {payload['worker_cpu_ms_per_unit']} CPU ms per unit over {answered} units; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
