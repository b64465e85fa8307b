"""Sentence clients beside page clients and after bursts: what one /classify user feels on a real `bentoml serve`.

    python -m bench.fairness                              # artifacts/offline-e5-small
    python -m bench.fairness --duration 20 --artifact artifacts/offline-small

One server (the artifact packaged into a temporary BENTOML_HOME, served on a free loopback port),
four phases, each measured side by side in this one run:

1. alone: one client sends single sentences back to back for --duration seconds;
2. beside pages: the same, while another client sends the largest page the limits allow back to back
   (real units of 90+ characters, as many as FIC_MAX_PAGE_UNITS and FIC_MAX_PAGE_CHARS allow);
3. largest page: that page alone on the idle worker, --pages times (the worst case an operator plans for;
   a page the service estimates over its time budget is refused before any work, so the largest page
   it accepts is found by cutting 10% at a time);
4. after a burst: 32 clients send 1-4 units for --burst seconds, then, after one second of quiet, one
   client sends --after single sentences one at a time (BentoML's batcher once held such a lone
   request for about the burst's mean queue wait, for ~50 batches).

Writes bench/results/fairness.json: p50/p99/max latency and sentences per minute per phase, the page
times, and the ratio of each phase's sentence p50 to the alone p50. The load generator shares the
CPU with the server, so latencies are upper bounds for a server on its own cores.
"""

from __future__ import annotations

import sys

if not __package__:
    sys.exit("run it from the repository root as a module: python -m bench.fairness --help")

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

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
from bench.serving import bentoml_server, package_model


def latency_summary(latencies: list[float], seconds: float) -> dict:
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "per_minute": round(60 * len(latencies) / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "max_ms": round(float(ms.max()), 1) if len(ms) else None}


def largest_page(units: list[str], max_units: int, max_chars: int) -> str:
    """Real units, one per line, as many as the service's unit and character limits allow (counted as the
    service counts them: split_units may split a line further)."""
    from runtime.text import split_units

    lines, chars = [], 0
    for text in units:
        if len(lines) == max_units or chars + len(text) + 1 > max_chars:
            break
        lines.append(text)
        chars += len(text) + 1
    while len(split_units("\n".join(lines))) > max_units:
        lines = lines[: len(lines) - max(1, (len(split_units("\n".join(lines))) - max_units) // 2)]
    return "\n".join(lines)


async def sentences(client, texts: list[str], until: float | None = None, count: int | None = None) -> list[float]:
    """Single-sentence /classify requests one after another; their latencies."""
    latencies: list[float] = []
    index = 0
    while (until is None or time.monotonic() < until) and (count is None or index < count):
        started = time.perf_counter()
        response = await client.post("/classify", json={"texts": [texts[index % len(texts)]]})
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
        index += 1
    return latencies


async def pages(client, page: str, until: float | None = None, count: int | None = None) -> list[float]:
    times: list[float] = []
    while (until is None or time.monotonic() < until) and (count is None or len(times) < count):
        started = time.perf_counter()
        response = await client.post("/classify_page", json={"text": page})
        response.raise_for_status()
        times.append(time.perf_counter() - started)
    return times


async def burst(url: str, units: list[str], users: int, seconds: float, seed: int) -> int:
    import httpx

    until = time.monotonic() + seconds
    sent = 0

    async def user(rng: random.Random) -> None:
        nonlocal sent
        async with httpx.AsyncClient(base_url=url, timeout=300, trust_env=False) as client:
            while time.monotonic() < until:
                texts = rng.sample(units, rng.randint(1, 4))
                (await client.post("/classify", json={"texts": texts})).raise_for_status()
                sent += 1

    await asyncio.gather(*(user(random.Random(seed + i)) for i in range(users)))
    return sent


async def measure(url: str, args: argparse.Namespace) -> dict:
    import httpx

    from runtime.text import split_units

    units = benchmark_units(4000, seed=args.seed)
    short = [text for text in units if 8 <= len(text) <= 80]
    async with httpx.AsyncClient(base_url=url, timeout=600, trust_env=False) as client:
        limits = (await client.get("/metadata")).json()["limits"]
        # The worst case the limits allow: long real units (the model reads up to max_length tokens of each).
        long_units = [text for text in units if len(text) >= 90]
        long_units *= limits["max_page_units"] // len(long_units) + 1
        page = largest_page(long_units, limits["max_page_units"], limits["max_page_chars"])
        await sentences(client, short, count=20)  # untimed: first-call costs
        # The service refuses (413, before any work) a page it estimates at more model time than a page may
        # take on this worker; the largest page it accepts is the worst case. Also the untimed first page.
        refused = 0
        while (response := await client.post("/classify_page", json={"text": page})).status_code == 413:
            refused += 1
            lines = page.split("\n")
            page = "\n".join(lines[: int(len(lines) * 0.9)])
        response.raise_for_status()
        out: dict = {"page": {"units": len(split_units(page)), "chars": len(page), "larger_pages_refused": refused,
                              "refusal": None}}
        if refused:
            out["page"]["refusal"] = "413: the page's estimated model time is over the service's page budget"

        started = time.monotonic()
        out["alone"] = latency_summary(await sentences(client, short, until=started + args.duration), args.duration)

        async with httpx.AsyncClient(base_url=url, timeout=600, trust_env=False) as page_client:
            started = time.monotonic()
            until = started + args.duration
            page_task = asyncio.create_task(pages(page_client, page, until=until))
            await asyncio.sleep(1.0)  # the first page is in flight
            beside = await sentences(client, short, until=until)
            page_times = await page_task
        out["beside_pages"] = latency_summary(beside, args.duration - 1.0)
        out["beside_pages"]["pages_finished"] = len(page_times)

        alone_pages = await pages(client, page, count=args.pages)
        out["largest_page_s"] = {"runs": [round(t, 2) for t in alone_pages], "max": round(max(alone_pages), 2),
                                 "units_per_s": round(out["page"]["units"] / float(np.median(alone_pages)), 1)}

        sent = await burst(url, units, args.burst_users, args.burst, args.seed)
        await asyncio.sleep(1.0)
        after = await sentences(client, short, count=args.after)
        out["after_burst"] = {**latency_summary(after, sum(after)), "burst_requests": sent,
                              "first_ms": [round(t * 1000, 1) for t in after[:5]]}
    for phase in ("beside_pages", "after_burst"):
        out[phase]["p50_vs_alone"] = round(out[phase]["p50_ms"] / out["alone"]["p50_ms"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="trained artifact folder")
    parser.add_argument("--duration", type=positive_int, default=40,
                        help="seconds of sentences alone, and again beside the page client (default 40)")
    parser.add_argument("--pages", type=positive_int, default=2, help="largest pages timed alone (default 2)")
    parser.add_argument("--burst", type=positive_int, default=30, help="seconds of the 32-client burst (default 30)")
    parser.add_argument("--burst-users", type=positive_int, default=32, help="clients in the burst (default 32)")
    parser.add_argument("--after", type=positive_int, default=60, help="sentences timed after the burst (default 60)")
    parser.add_argument("--precision", default="fp32", help="FIC_PRECISION for the server (default fp32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "fairness.json")
    args = parser.parse_args(argv)
    require_artifact(args.artifact)

    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"}
    payload = header("fairness", settings)
    with tempfile.TemporaryDirectory(prefix="fic-fairness-") as tmp:
        home = Path(tmp) / "bentoml"
        tag = package_model(args.artifact.resolve(), home, args.precision)
        env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True", "FIC_MODEL": tag,
               "FIC_PRECISION": args.precision}
        with bentoml_server(env, Path(tmp) / "serve.log", ready_timeout=300) as (url, _, _):
            print(f"fairness: {url}, {args.duration} s per phase", file=sys.stderr, flush=True)
            payload.update(asyncio.run(measure(url, args)))
    path = write_results(args.out, payload)

    rows = [[phase, payload[phase]["requests"], payload[phase]["per_minute"], payload[phase]["p50_ms"],
             payload[phase]["p99_ms"], payload[phase]["max_ms"]] for phase in ("alone", "beside_pages", "after_burst")]
    print(format_table(["single sentences", "requests", "per minute", "p50 ms", "p99 ms", "max ms"], rows))
    print(f"largest page ({payload['page']['units']} units, {payload['page']['chars']} chars) alone: "
          f"{payload['largest_page_s']['runs']} s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
