"""Where dynamic int8 changes labels: quantise parts of the encoder, measure label agreement with fp32 and speed.

    python -m bench.int8_layers                      # artifacts/offline-e5-small, 1,000 real units
    python -m bench.int8_layers --units 400 --variants all,ffn,per-channel

Dynamic int8 of every Linear layer changed about one label set in twenty on the e5 default. Each
variant here quantises a subset of the Linear layers (torch dynamic int8, per-tensor weight scales
unless it says per-channel), scores the same real units (the corpus' cleaned units, fused with the
TF-IDF half as served) and reports: label-set agreement with fp32, the largest |Δp|, and units/s
beside fp32 in the same run. Writes bench/results/int8-layers.json.
"""

from __future__ import annotations

import sys

if not __package__:
    sys.exit("run it from the repository root as a module: python -m bench.int8_layers --help")

import argparse
import time
from pathlib import Path
from typing import Callable

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


def _block(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[parts.index("layer") + 1]) if "layer" in parts else None


def _ffn(name: str) -> bool:
    return ".intermediate." in name or (".output.dense" in name and ".attention." not in name)


def variants(layers: int) -> dict[str, tuple[Callable[[str], bool], bool]]:
    """name -> (which Linear layers to quantise, per-channel weight scales)."""
    out: dict[str, tuple[Callable[[str], bool], bool]] = {
        "all": (lambda name: True, False),
        "all per-channel": (lambda name: True, True),
        "encoder (head fp32)": (lambda name: _block(name) is not None, False),
        "ffn": (_ffn, False),
        "ffn per-channel": (_ffn, True),
        "attention": (lambda name: ".attention." in name, False),
        "ffn-in (intermediate)": (lambda name: ".intermediate." in name, False),
        "ffn-out (output.dense)": (lambda name: ".output.dense" in name and ".attention." not in name, False),
        "head": (lambda name: _block(name) is None, False),
    }
    def ffn_out(name: str) -> bool:
        return ".output.dense" in name and ".attention." not in name

    # The FFN's second projection reads the GELU's output, whose outliers one per-tensor activation scale
    # serves badly: keep it in fp32 everywhere, or only in the first blocks.
    out["all but ffn-out"] = (lambda name: not ffn_out(name), False)
    for upto in (4, 6, 8):
        out[f"all but ffn-out of blocks 0-{upto - 1}"] = (
            lambda name, u=upto: not (ffn_out(name) and (_block(name) or 0) < u), False)
    for block in range(layers):
        out[f"block {block}"] = (lambda name, b=block: _block(name) == b, False)
    for first_fp32 in (layers - 2, layers - 4):
        out[f"blocks 0-{first_fp32 - 1} (last {layers - first_fp32} fp32)"] = (
            lambda name, f=first_fp32: (_block(name) is not None and _block(name) < f), False)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.int8_layers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="trained artifact folder")
    parser.add_argument("--units", type=positive_int, default=1000, help="real units scored per variant")
    parser.add_argument("--calibration", action="store_true",
                        help="score the artifact's calibration units instead (what auto decides on)")
    parser.add_argument("--variants", default="all", help="comma-separated variant names, or all (default)")
    parser.add_argument("--repeats", type=positive_int, default=2, help="timings per variant, median (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "int8-layers.json")
    args = parser.parse_args(argv)
    require_artifact(args.artifact)

    import torch

    from runtime.classifier import Classifier, int8_copy
    from runtime.decide import decide, label_matrix

    torch.manual_seed(args.seed)
    clf = Classifier.from_artifact(args.artifact, precision="fp32")
    if args.calibration:
        from runtime.artifact import calibration_units

        texts = calibration_units(args.artifact) or parser.error(f"{args.artifact} has no calibration units")
    else:
        texts = benchmark_units(args.units, seed=args.seed)
    encoded, _ = clf.encode(texts)
    table = variants(clf.model.config.num_hidden_layers)
    wanted = list(table) if args.variants == "all" else [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in wanted if v not in table]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(table)}")
    payload = header("int8_layers", {"artifact": str(args.artifact), "units": len(texts), "repeats": args.repeats,
                                     "calibration": args.calibration, "seed": args.seed})

    def run(runner) -> tuple[float, np.ndarray]:
        """Median seconds of --repeats timings, and the fused probabilities."""
        clf._runner = runner
        clf.encoder_probabilities(encoded[:64])  # untimed: first-call costs
        timings = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            probs = clf.encoder_probabilities(encoded)
            timings.append(time.perf_counter() - started)
        return float(np.median(timings)), clf.fuse(probs, texts)

    def labels(probs: np.ndarray) -> np.ndarray:
        return label_matrix(decide(probs, clf.directions, clf.thresholds, clf.other), clf.directions)

    fp32_s, fp32_probs = run(clf.model)
    reference = labels(fp32_probs)
    rows = {"fp32": {"units_per_s": round(len(texts) / fp32_s, 1), "agreement_with_fp32": 1.0, "max_abs_diff": 0.0,
                     "quantised_layers": 0}}
    for name in wanted:
        select, per_channel = table[name]
        quantised = int8_copy(clf.model, select, per_channel=per_channel)
        seconds, probs = run(quantised)
        count = sum(1 for module in quantised.modules() if type(module).__name__ == "Linear"
                    and type(module).__module__.startswith("torch.ao.nn.quantized"))
        rows[name] = {"units_per_s": round(len(texts) / seconds, 1),
                      "speedup_vs_fp32": round(fp32_s / seconds, 2),
                      "agreement_with_fp32": round(float((labels(probs) == reference).all(axis=1).mean()), 4),
                      "max_abs_diff": round(float(np.abs(probs - fp32_probs).max()), 4),
                      "quantised_layers": count}
        print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    # fp32 timed again at the end: the faster of the two is the baseline, so a slow start (a busy moment, cold
    # caches) does not flatter every variant after it.
    again_s, _ = run(clf.model)
    payload["fp32_seconds"] = {"first": round(fp32_s, 3), "last": round(again_s, 3)}
    if again_s < fp32_s:
        for name, row in rows.items():
            if name != "fp32":
                row["speedup_vs_fp32"] = round(row["speedup_vs_fp32"] * again_s / fp32_s, 2)
        rows["fp32"]["units_per_s"] = round(len(texts) / again_s, 1)
    payload["variants"] = rows
    path = write_results(args.out, payload)
    print(format_table(["variant", "units/s", "x fp32", "agreement", "max |dp|", "layers"],
                       [[k, v["units_per_s"], v.get("speedup_vs_fp32", 1.0), v["agreement_with_fp32"],
                         v["max_abs_diff"], v["quantised_layers"]] for k, v in rows.items()]))
    print(f"results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
