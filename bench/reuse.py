"""What scoring each distinct unit once saves on a repetitive crawl (serving/reuse.py).

    python -m bench.reuse --model artifacts/offline-e5-small [--rss-model ARTIFACT]

Every run is a real `python -m serving.batch` process (start-up included), timed by wall clock,
its peak RSS read from the kernel (wait4). On a crawl from bench/synthetic_crawl.py (--pages,
default 2,000 pages on 20 sites, 30% of bodies syndicated):
  1. without reuse (--no-reuse), 2. with reuse (the default), 3. with --cache DIR into an empty
  folder, 4. the same crawl again with the now filled cache (a daily re-crawl of unchanged pages);
then a crawl of --copies-of distinct pages (default 190, nothing syndicated) against a crawl holding
four copies of each under other ids; and peak RSS with and without reuse on a --rss-pages crawl
(default 20,000) with --rss-model (default: --model; a small model keeps the run without reuse short).
Results: bench/results/reuse.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import DEFAULT_ARTIFACT, RESULTS_DIR, header, write_results
from bench.synthetic_crawl import generate, write


def run_with_rss(crawl: Path, out: Path, model: Path, *extra: str) -> dict:
    """`score`, with the child's own peak RSS (resource usage of that one child, not of all children)."""
    command = [sys.executable, "-m", "serving.batch", str(crawl), "-o", str(out), "--model", str(model),
               "--precision", "fp32", "--no-progress", *extra]
    started = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    err = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-2000:]}")
    reuse = next((line[len("reuse: "):] for line in err.splitlines() if line.startswith("reuse: ")), None)
    pages = sum(1 for _ in out.with_name(out.stem + ".pages.jsonl").open(encoding="utf-8"))
    return {"seconds": round(seconds, 2), "pages": pages, "pages_per_s": round(pages / seconds, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "reuse": reuse}


def copies_crawl(source: Path, out: Path, copies: int) -> Path:
    """Every page of `source` `copies` times, under other ids (as when a crawler fetches a page at several urls)."""
    pages = [json.loads(line) for line in source.open(encoding="utf-8")]
    with out.open("w", encoding="utf-8") as handle:
        for n in range(copies):
            for page in pages:
                handle.write(json.dumps({**page, "id": f"{page['id']}-copy{n}"}, ensure_ascii=False) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reuse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_ARTIFACT, help=f"artifact (default {DEFAULT_ARTIFACT})")
    parser.add_argument("--rss-model", type=Path, default=None, help="artifact for the RSS runs (default --model)")
    parser.add_argument("--pages", type=int, default=2000, help="pages of the main crawl (default 2000)")
    parser.add_argument("--copies-of", type=int, default=190, help="distinct pages of the copies crawl (default 190)")
    parser.add_argument("--rss-pages", type=int, default=20000, help="pages of the RSS crawl (default 20000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rss_model = args.rss_model or args.model
    result = header("reuse", {"model": str(args.model), "rss_model": str(rss_model), "pages": args.pages,
                              "sites": 20, "syndicated": 0.3, "copies_of": args.copies_of,
                              "rss_pages": args.rss_pages, "seed": args.seed, "precision": "fp32"})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        crawl, _ = write(generate(args.pages, 20, 0.3, seed=args.seed), work / "main")
        runs = {}
        for name, extra in [("no_reuse", ["--no-reuse"]), ("reuse", []),
                            ("cache_first", ["--cache", str(work / "cache")]),
                            ("cache_again", ["--cache", str(work / "cache")])]:
            runs[name] = run_with_rss(crawl, work / name / "units.jsonl", args.model, *extra)
            print(f"{name}: {runs[name]}", file=sys.stderr, flush=True)
        same = all((work / name / "units.jsonl").read_bytes() == (work / "no_reuse" / "units.jsonl").read_bytes()
                   for name in ("reuse", "cache_first", "cache_again"))
        base = runs["no_reuse"]["pages_per_s"]
        result["crawl"] = {"runs": runs, "output_identical": same,
                           "reuse_over_no_reuse": round(runs["reuse"]["pages_per_s"] / base, 2),
                           "cache_again_over_no_reuse": round(runs["cache_again"]["pages_per_s"] / base, 2),
                           "cache_again_over_first_run": round(runs["cache_again"]["pages_per_s"]
                                                               / runs["reuse"]["pages_per_s"], 2)}

        originals, _ = write(generate(args.copies_of, 20, 0.0, seed=args.seed), work / "originals")
        four = copies_crawl(originals, work / "four-copies.jsonl", 4)
        once = run_with_rss(originals, work / "once" / "units.jsonl", args.model)
        fourfold = run_with_rss(four, work / "fourfold" / "units.jsonl", args.model)
        result["copies"] = {"originals": once, "four_copies": fourfold,
                            "cost_ratio": round(fourfold["seconds"] / once["seconds"], 2)}
        print(f"copies: {result['copies']}", file=sys.stderr, flush=True)

        big, _ = write(generate(args.rss_pages, 20, 0.3, seed=args.seed), work / "big")
        without = run_with_rss(big, work / "big-no-reuse" / "units.jsonl", rss_model, "--no-reuse")
        with_reuse = run_with_rss(big, work / "big-reuse" / "units.jsonl", rss_model)
        result["rss"] = {"no_reuse": without, "reuse": with_reuse,
                         "rss_ratio": round(with_reuse["peak_rss_mb"] / without["peak_rss_mb"], 3)}
        print(f"rss: {result['rss']}", file=sys.stderr, flush=True)
    path = write_results(RESULTS_DIR / "reuse.json", result)
    print(json.dumps({k: result[k] for k in ("crawl", "copies", "rss")}, indent=1))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
