"""Inference speed: transformers pipeline vs our Classifier (fp32, bf16, int8) vs ONNX Runtime (fp32, int8).

    python -m bench.inference                               # defaults: 2,000 units, 3 repeats, the e5 artifact
    python -m bench.inference --units 64 --repeats 1 --artifact artifacts/offline-small
    python -m bench.inference --models trained,base         # also a BERT-base-sized model (random weights)

Every variant scores the same N real-length units (the cleaned corpus, cycled to N, in
a seeded shuffled order) in one run; repeats are interleaved across variants so a
change in machine load hits all of them alike. Reported per variant: sentences/s
(median of the repeats), achieved GFLOP/s and its share of the machine's matmul peak,
and agreement with fp32 (same label set; largest probability difference): of the encoder's own labels,
and of the served labels where the model averages in a TF-IDF half ("agree served").
"""

from __future__ import annotations

import sys

if not __package__:  # run as a file, `bench.common` would not import
    sys.exit("run it from the repository root as a module: python -m bench.inference --help")

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bench.common import (
    DEFAULT_ARTIFACT,
    RESULTS_DIR,
    benchmark_units,
    bert_forward_flops,
    format_table,
    header,
    matmul_peak_gflops,
    median,
    model_shape,
    padded_shapes,
    parse_choices,
    positive_int,
    quiet_transformers,
    require_artifact,
    time_call,
    write_base_artifact,
    write_results,
)

MODELS = {"trained": "the trained artifact (--artifact)", "base": "BERT-base-sized, random weights"}
VARIANTS = {
    "a": "pipeline, one call per unit",
    "b": "pipeline, list, batch_size={pipeline_batch}",
    "c": "Classifier fp32",
    "d": "Classifier bf16 autocast",
    "e": "Classifier int8 dynamic",
    "f": "ONNX Runtime fp32",
    "g": "ONNX Runtime int8 dynamic",
}
OURS = ("c", "d", "e")  # the variants the speed-ups count as "ours"
ORT = ("f", "g")

Batches = list[tuple[int, int]]


@dataclass
class Variant:
    key: str
    label: str
    peak: str  # the matmul peak its GFLOP/s is compared with: fp32 or bf16
    run: Callable[[list[str]], np.ndarray] | None = None  # cleaned texts -> (n, directions) probabilities
    batches: Callable[[list[int]], Batches] | None = None  # token lengths -> (batch, seq) of each forward pass
    skipped: str | None = None  # why it was not measured


# ----------------------------------------------------------------------------- variants


def scores_matrix(outputs: list, directions: list[str]) -> np.ndarray:
    """Pipeline outputs (per text, a list of {label, score}) -> probabilities in direction order."""
    index = {label: i for i, label in enumerate(directions)}
    probs = np.zeros((len(outputs), len(directions)), dtype=np.float32)
    for row, scores in enumerate(outputs):
        if scores and isinstance(scores[0], list):  # a single text may come back wrapped in a list
            scores = scores[0]
        for item in scores:
            probs[row, index[item["label"]]] = item["score"]
    return probs


def pipeline_variant(key: str, clf, batch_size: int | None, label: str) -> Variant:
    """transformers' text-classification pipeline on the same model weights and tokenizer."""
    from transformers import pipeline

    pipe = pipeline("text-classification", model=clf.model, tokenizer=clf.tokenizer, top_k=None, device="cpu")
    # Same truncation and prefix (e5's "query: ") as Classifier, so both see the same tokens.
    kwargs = {"truncation": True, "max_length": clf.max_length}
    prefix = clf.text_prefix

    if batch_size is None:
        def run(texts: list[str]) -> np.ndarray:
            return scores_matrix([pipe(prefix + text, **kwargs) for text in texts], clf.directions)

        def batches(lengths: list[int]) -> Batches:
            return [(1, n) for n in lengths]
    else:
        def run(texts: list[str]) -> np.ndarray:
            return scores_matrix(pipe([prefix + text for text in texts], batch_size=batch_size, **kwargs),
                                 clf.directions)

        def batches(lengths: list[int]) -> Batches:
            return padded_shapes(lengths, batch_size, length_sorted=False)

    return Variant(key, label, "fp32", run, batches)


def twin_of(clf):
    """Another Classifier on the same weights, tokenizer, thresholds and prefix, to set its own precision."""
    from runtime.classifier import Classifier

    twin = Classifier(clf.model, clf.tokenizer, clf.directions, clf.thresholds, clf.other, clf.max_length,
                      batch_size=clf.batch_size, meta=clf.meta, text_prefix=clf.text_prefix)
    twin.weights_fingerprint = clf.weights_fingerprint  # same weights: the onnx variants share one exported graph
    return twin


def classifier_variant(key: str, clf, precision: str, label: str) -> Variant:
    """Our Classifier at one precision, sharing the fp32 model's weights (int8 gets its own copy)."""
    if precision not in clf.available_precisions():
        return Variant(key, label, "bf16", skipped=f"{precision} not offered on this machine "
                       f"(available_precisions: {', '.join(clf.available_precisions())})")
    twin = twin_of(clf)
    twin.set_precision(precision)
    # int8 has no matmul peak of its own here; it is compared with bf16, the fastest one measured.
    peak = "fp32" if precision == "fp32" else "bf16"
    return Variant(key, label, peak, twin.probabilities, lambda lengths: padded_shapes(lengths, clf.batch_size, True))


def ort_variant(key: str, clf, workdir: Path, precision: str, label: str) -> Variant:
    """ONNX Runtime through our Classifier (precision onnx or onnx-int8: the same tokenisation and
    length-sorted batches as c, the exported graph in place of the torch module)."""
    from runtime import onnx_runtime

    if not onnx_runtime.available():
        return Variant(key, label, "fp32", skipped=f"ONNX Runtime not installed: {onnx_runtime.INSTALL_HINT}")
    twin = twin_of(clf)
    twin.model_dir = workdir  # the exported graphs go to a temporary folder, not the artifact
    twin.set_precision(precision)
    return Variant(key, label, "fp32" if precision == "onnx" else "bf16", twin.probabilities,
                   lambda lengths: padded_shapes(lengths, clf.batch_size, True))


def make_variants(keys: list[str], clf, workdir: Path, pipeline_batch: int) -> list[Variant]:
    labels = {k: v.format(pipeline_batch=pipeline_batch) for k, v in VARIANTS.items()}
    makers = {
        "a": lambda: pipeline_variant("a", clf, None, labels["a"]),
        "b": lambda: pipeline_variant("b", clf, pipeline_batch, labels["b"]),
        "c": lambda: classifier_variant("c", clf, "fp32", labels["c"]),
        "d": lambda: classifier_variant("d", clf, "bf16", labels["d"]),
        "e": lambda: classifier_variant("e", clf, "int8", labels["e"]),
        "f": lambda: ort_variant("f", clf, workdir, "onnx", labels["f"]),
        "g": lambda: ort_variant("g", clf, workdir, "onnx-int8", labels["g"]),
    }
    variants = []
    for key in keys:
        try:
            variants.append(makers[key]())
        except Exception as exc:  # one variant that cannot be set up must not sink the others
            variants.append(Variant(key, labels[key], "fp32", skipped=f"setup failed: {type(exc).__name__}: {exc}"))
    return variants


# ----------------------------------------------------------------------------- measuring


def time_variants(variants: list[Variant], units: list[str], repeats: int, warmup: int) -> tuple[dict, dict, dict]:
    """Seconds per repeat and first-repeat probabilities per variant, plus failures."""
    active = [v for v in variants if v.skipped is None]
    failed: dict[str, str] = {}
    seconds: dict[str, list[float]] = {v.key: [] for v in active}
    probs: dict[str, np.ndarray] = {}
    for variant in active:
        try:
            variant.run(units[:warmup])  # first calls pick kernels and allocate; not what we time
        except Exception as exc:
            failed[variant.key] = f"{type(exc).__name__}: {exc}"
    for _ in range(repeats):
        # Interleaved: each repeat runs every variant once, so load drift hits them alike.
        for variant in active:
            if variant.key in failed:
                continue
            try:
                elapsed, result = time_call(lambda: variant.run(units))
            except Exception as exc:
                failed[variant.key] = f"{type(exc).__name__}: {exc}"
                continue
            seconds[variant.key].append(elapsed)
            probs.setdefault(variant.key, result)
    return seconds, probs, failed


def agreement(probs: np.ndarray, reference: np.ndarray, clf) -> tuple[float, float]:
    """Share of units with the same label set as fp32 (artifact thresholds), largest |Δ probability|."""
    from runtime.decide import decide, label_matrix

    def labels(p: np.ndarray) -> np.ndarray:
        return label_matrix(decide(p, clf.directions, clf.thresholds, clf.other), clf.directions)

    same = (labels(probs) == labels(reference)).all(axis=1)
    return float(same.mean()), float(np.abs(probs - reference).max())


def speedups(results: dict[str, dict]) -> dict:
    """c/a, c/b, best/a, best/b and best/ort, where best is the fastest of our variants and ort the
    fastest ONNX Runtime variant."""
    rate = {k: r["sentences_per_s"] for k, r in results.items() if r["status"] == "ok"}
    ours = {k: rate[k] for k in OURS if k in rate}
    ort = {k: rate[k] for k in ORT if k in rate}
    best = max(ours, key=ours.get) if ours else None
    best_ort = max(ort, key=ort.get) if ort else None
    out: dict = {"best": best, "best_ort": best_ort}
    for name, numerator in (("c", rate.get("c")), ("best", ours.get(best))):
        for baseline, denominator in (("a", rate.get("a")), ("b", rate.get("b")), ("ort", ort.get(best_ort))):
            out[f"{name}/{baseline}"] = numerator / denominator if numerator and denominator else None
    return out


def benchmark_model(name: str, artifact: Path, units: list[str], args, peaks: dict[str, float]) -> dict:
    from runtime.classifier import Classifier

    clf = Classifier.from_artifact(artifact, batch_size=args.batch_size, precision="fp32")
    encoded, truncated = clf.encode(units)
    lengths = [len(ids) for ids in encoded]
    shape = model_shape(clf.model.config)
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as workdir:
        variants = make_variants(args.variants, clf, Path(workdir), args.pipeline_batch)
        seconds, probs, failed = time_variants(variants, units, args.repeats, min(args.warmup, len(units)))
    # The fp32 reference for agreement: variant c's output, or an untimed fp32 pass.
    reference = probs["c"] if "c" in probs else clf.probabilities(units)

    results = {}
    for variant in variants:
        entry: dict = {"label": variant.label, "peak_precision": variant.peak}
        if variant.skipped or variant.key in failed or not seconds.get(variant.key):
            entry.update(status="skipped" if variant.skipped else "failed",
                         reason=variant.skipped or failed.get(variant.key))
            results[variant.key] = entry
            continue
        flops = bert_forward_flops(shape, len(clf.directions), variant.batches(lengths))
        elapsed = median(seconds[variant.key])
        agree, max_diff = agreement(probs[variant.key], reference, clf)
        # The labels the served model gives: its TF-IDF half averaged in (the same for every variant), when it has one.
        served = (agreement(clf.fuse(probs[variant.key], units), clf.fuse(reference, units), clf)[0]
                  if clf.lexical is not None else None)
        entry.update(
            status="ok",
            seconds=seconds[variant.key],
            median_seconds=elapsed,
            sentences_per_s=len(units) / elapsed,
            gflop=flops / 1e9,
            gflops_per_s=flops / elapsed / 1e9,
            pct_of_peak=100 * flops / elapsed / 1e9 / peaks[variant.peak],
            agreement_with_fp32=agree,
            served_agreement_with_fp32=served,
            max_abs_prob_diff=max_diff,
        )
        results[variant.key] = entry
    cost = forward_cost(clf, args.repeats, args.seed)
    return {
        "forward_cost": cost,
        "batch_plan": padding_of_small_batches(lengths, 32, 200, args.seed),
        "description": MODELS[name],
        "artifact": str(artifact) if name == "trained" else "temporary folder (random weights)",
        "shape": shape,
        "parameters": clf.model.num_parameters(),
        "max_length": clf.max_length,
        "batch_size": args.batch_size,
        "tokens": {"mean": float(np.mean(lengths)), "median": float(np.median(lengths)), "max": int(max(lengths)),
                   "truncated_units": int(truncated.sum())},
        "variants": results,
        "speedups": speedups(results),
    }


def forward_cost(clf, repeats: int, seed: int) -> dict:
    """Seconds of one fp32 forward pass over a grid of (rows, tokens) shapes, fitted (least squares on
    relative error) as fixed + per_token x rows x tokens + per_token_squared x rows x tokens²; in units
    of per_token these are `FORWARD_OVERHEAD_TOKENS` and `ATTENTION_PER_TOKEN`, the cost model of
    `plan_batches`."""
    import time

    import torch

    rng = torch.Generator().manual_seed(seed)
    shapes = [(rows, tokens) for rows in (1, 4, 16, 32) for tokens in (16, 32, 64, 128) if tokens <= clf.max_length]
    timings = {}
    with torch.inference_mode():
        for rows, tokens in shapes:
            ids = torch.randint(1000, min(clf.model.config.vocab_size, 30000), (rows, tokens), generator=rng)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            clf.model(**batch)  # warm-up
            runs = []
            for _ in range(max(3, repeats)):
                started = time.perf_counter()
                clf.model(**batch)
                runs.append(time.perf_counter() - started)
            timings[(rows, tokens)] = median(runs)
    design = np.array([[1.0, rows * tokens, rows * tokens ** 2] for rows, tokens in shapes])
    seconds = np.array([timings[shape] for shape in shapes])
    weights = 1 / seconds  # the small shapes matter as much as the large ones
    fixed, per_token, per_token_squared = np.linalg.lstsq(design * weights[:, None], seconds * weights, rcond=None)[0]
    return {"seconds": {f"{rows}x{tokens}": timings[(rows, tokens)] for rows, tokens in shapes},
            "fixed_ms": fixed * 1000, "per_token_us": per_token * 1e6,
            "overhead_tokens": fixed / per_token if per_token > 0 else None,
            "attention_per_token": per_token_squared / per_token if per_token > 0 else None}


def padding_of_small_batches(lengths: list[int], rows: int, draws: int, seed: int) -> dict:
    """Padded tokens / real tokens when `rows` random units (one adaptive batch of the service at
    concurrency `rows`) are scored in one padded pass versus as `plan_batches` splits them."""
    from runtime.batching import plan_batches

    rng = np.random.default_rng(seed)
    lengths_arr = np.asarray(lengths)
    one_pass, planned, passes = [], [], []
    for _ in range(draws):
        batch = rng.choice(lengths_arr, size=min(rows, len(lengths_arr)), replace=False)
        plan = plan_batches(batch, 64)
        one_pass.append(batch.max() * len(batch) / batch.sum())
        planned.append(sum(len(idx) * batch[idx].max() for idx in plan) / batch.sum())
        passes.append(len(plan))
    return {"rows": rows, "draws": draws, "one_pass_padded_over_real": float(np.mean(one_pass)),
            "planned_padded_over_real": float(np.mean(planned)), "planned_passes_mean": float(np.mean(passes))}


# ----------------------------------------------------------------------------- report


def print_model(name: str, result: dict) -> None:
    rows, notes = [], []
    for key, r in result["variants"].items():
        if r["status"] != "ok":
            rows.append([key, r["label"], None, None, None, None, None, None, None, r["status"]])
            notes.append(f"  {key} {r['status']}: {r['reason']}")
            continue
        rows.append([key, r["label"], r["sentences_per_s"], r["median_seconds"], r["gflops_per_s"],
                     f"{r['pct_of_peak']:.1f}% {r['peak_precision']}", f"{r['agreement_with_fp32']:.4f}",
                     "-" if r.get("served_agreement_with_fp32") is None else f"{r['served_agreement_with_fp32']:.4f}",
                     f"{r['max_abs_prob_diff']:.2e}", "ok"])
    shape = result["shape"]
    print(f"\n{name}: {result['description']} — {shape['layers']} layers, hidden {shape['hidden']}, "
          f"vocab {shape['vocab']:,}, {result['parameters'] / 1e6:.1f}M parameters; "
          f"tokens/unit mean {result['tokens']['mean']:.1f}, max {result['tokens']['max']}")
    print(format_table(["", "variant", "sent/s", "median s", "GFLOP/s", "of peak", "agree", "agree served", "max|Δp|",
                        "status"], rows))
    for note in notes:
        print(note)
    cost, plan = result["forward_cost"], result["batch_plan"]
    print(f"one fp32 forward pass = {cost['fixed_ms']:.1f} ms + {cost['per_token_us']:.1f} µs per padded token "
          f"x (1 + {cost['attention_per_token']:.4f} x length) (fixed cost = {cost['overhead_tokens']:.0f} tokens); "
          f"{plan['rows']} random units: "
          f"{plan['one_pass_padded_over_real']:.2f}x their real tokens in one pass, "
          f"{plan['planned_padded_over_real']:.2f}x in {plan['planned_passes_mean']:.1f} planned passes")
    s = result["speedups"]
    print("speed-ups: " + ", ".join(f"{k} {v:.2f}x" if v else f"{k} -" for k, v in s.items() if "/" in k)
          + (f" (best = {s['best']}, best ONNX Runtime = {s['best_ort']})" if s["best"] else ""))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.inference",
        description="Sentences/s, GFLOP/s and fp32 agreement of transformers' pipeline and our Classifier "
                    "(fp32, bf16, int8) and ONNX Runtime, on the same real-length units, side by side.",
    )
    parser.add_argument("--units", type=positive_int, default=2000, help="units scored per repeat (default 2000)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed repeats per variant; the median is reported (default 3)")
    parser.add_argument("--models", type=lambda v: parse_choices(v, list(MODELS)), default=["trained"],
                        help="trained (the --artifact), base (BERT-base-sized, random weights); default trained")
    parser.add_argument("--variants", type=lambda v: parse_choices(v, list(VARIANTS)),
                        default=list(VARIANTS),
                        help="a pipeline per unit, b pipeline batched, c fp32, d bf16, e int8, f ONNX Runtime fp32, "
                             "g ONNX Runtime int8 (default all)")
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT,
                        help=f"trained artifact folder (default {DEFAULT_ARTIFACT})")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="Classifier batch size (default 64, as serving)")
    parser.add_argument("--pipeline-batch", type=positive_int, default=32,
                        help="pipeline batch size for variant b (default 32)")
    parser.add_argument("--warmup", type=positive_int, default=64,
                        help="units run untimed per variant first (default 64)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: the CPU quota)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the unit order and the random model (default 0)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "inference.json",
                        help="results file (default bench/results/inference.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_artifact(args.artifact)  # fail before any slow setup
    from runtime.threads import configure_threads

    args.threads = configure_threads(args.threads)
    quiet_transformers()
    units = benchmark_units(args.units, args.seed)
    report = header("inference", {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    from runtime.threads import cpu_has_native_bf16

    # Without AVX-512 BF16 or AMX a bf16 matmul is emulated and takes minutes at this size; the
    # variants that would be compared with it (bf16, int8) are then compared with the fp32 peak.
    native = cpu_has_native_bf16()
    peaks = {"fp32": matmul_peak_gflops("fp32")}
    peaks["bf16"] = matmul_peak_gflops("bf16") if native else peaks["fp32"]
    report["matmul_peak_gflops"] = {**peaks, "bf16_native": native,
                                    "method": "torch.matmul 2048x2048, median of 3 x 5 calls; int8 variants are "
                                              "compared with the bf16 peak" + ("" if native else
                                              "; no native bf16 on this CPU, so bf16 = the fp32 peak")}
    print(f"{report['machine']['cpu_model']}, {args.threads} threads; matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, "
          + (f"bf16 {peaks['bf16']:.0f} GFLOP/s" if native else "no native bf16")
          + f"; {len(units)} units x {args.repeats} repeats")
    report["models"] = {}
    for name in args.models:
        if name == "trained":
            report["models"][name] = benchmark_model(name, args.artifact, units, args, peaks)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-base-") as tmp:
                artifact = write_base_artifact(args.artifact, Path(tmp) / "bert-base-sized", args.seed)
                report["models"][name] = benchmark_model(name, artifact, units, args, peaks)
        print_model(name, report["models"][name])
        write_results(args.out, report)  # after each model, so a long run keeps what it finished
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
