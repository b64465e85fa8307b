"""Batch scoring throughput: the Ray Data engine against the in-process engine, and Ray actors 1 vs 2.

    python -m bench.ray_scoring                                   # 5,000 units, artifacts/offline-e5-small
    python -m bench.ray_scoring --model /path/to/artifact --units 5000 --repeats 1

Every variant runs `python -m serving.batch`'s own `run` on the same crawl: the benchmark's
real-length units (bench.common.benchmark_units) grouped into pages of 20 lines, in one
.jsonl file. Ray is started once (num_cpus = the CPU quota) and kept for all Ray variants,
as a cluster would be; each Ray run still pays for starting its actors and loading the model
in each, which is part of what the engine costs. Throughput = units written / wall seconds.
Repeats are interleaved across variants so machine load hits all of them alike.
"""

from __future__ import annotations

import sys

if not __package__:  # run as a file, `bench.common` would not import
    sys.exit("run it from the repository root as a module: python -m bench.ray_scoring --help")

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import (
    DEFAULT_ARTIFACT,
    RESULTS_DIR,
    benchmark_units,
    format_table,
    header,
    median,
    positive_int,
    require_artifact,
    write_results,
)

UNITS_PER_PAGE = 20


def write_crawl(path: Path, units: list[str]) -> int:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(0, len(units), UNITS_PER_PAGE):
            text = "\n".join(units[i:i + UNITS_PER_PAGE])
            handle.write(json.dumps({"id": f"page{i // UNITS_PER_PAGE:05d}", "text": text}, ensure_ascii=False) + "\n")
    return (len(units) + UNITS_PER_PAGE - 1) // UNITS_PER_PAGE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_scoring", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_ARTIFACT, help="training artifact folder")
    parser.add_argument("--units", type=positive_int, default=5000, help="units to score (default 5000)")
    parser.add_argument("--repeats", type=positive_int, default=1, help="runs of each variant (default 1)")
    parser.add_argument("--precision", default="fp32", help="precision for every variant (default fp32)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "ray.json")
    args = parser.parse_args(argv)
    require_artifact(args.model)

    import ray

    from runtime.threads import cpu_quota
    from serving.batch import run

    cores = cpu_quota()
    payload = header("ray_scoring", {"model": str(args.model), "units": args.units, "repeats": args.repeats,
                                     "precision": args.precision, "batch_size": args.batch_size,
                                     "units_per_page": UNITS_PER_PAGE, "ray_num_cpus": cores})
    variants = {"in-process": {"engine": "local"}, "ray, 1 actor": {"engine": "ray", "actors": 1},
                "ray, 2 actors": {"engine": "ray", "actors": 2}}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        crawl = Path(tmp) / "crawl.jsonl"
        pages = write_crawl(crawl, benchmark_units(args.units))
        started = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
        payload["ray_start_s"] = round(time.perf_counter() - started, 2)
        try:
            for repeat in range(args.repeats):
                for name, options in variants.items():
                    out = Path(tmp) / f"{name.replace(' ', '_').replace(',', '')}-{repeat}" / "units.jsonl"
                    started = time.perf_counter()
                    tally = run([str(crawl)], out, str(args.model), batch_size=args.batch_size,
                                precision=args.precision, **options)
                    seconds = time.perf_counter() - started
                    runs[name].append({"seconds": round(seconds, 2), "units": tally.units, "documents": tally.written,
                                       "units_per_s": round(tally.units / seconds, 1)})
                    print(f"{name}: {tally.units} units, {tally.written} pages in {seconds:.1f} s", file=sys.stderr,
                          flush=True)
        finally:
            ray.shutdown()
    summary = {name: median([r["units_per_s"] for r in rs]) for name, rs in runs.items()}
    base = summary["in-process"]
    payload["pages"] = pages
    payload["runs"] = runs
    payload["units_per_s"] = summary
    payload["ratio_to_in_process"] = {name: round(value / base, 3) for name, value in summary.items()}
    payload["actors_2_over_1"] = round(summary["ray, 2 actors"] / summary["ray, 1 actor"], 3)
    payload["note"] = ("All variants share the same cores: with 2 CPUs, 2 actors get 1 torch thread each instead of "
                       "one actor with 2, so actors 2 vs 1 measures overhead here, not scale-out. Ray's own processes "
                       "(raylet, GCS, read/split tasks) take CPU from the model on a 2-core machine.")
    path = write_results(args.out, payload)
    print(format_table(["variant", "units/s", "ratio to in-process"],
                       [[name, summary[name], payload["ratio_to_in_process"][name]] for name in variants]))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
