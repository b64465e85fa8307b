"""What evidence costs, and how many integration steps it needs (runtime/evidence.py).

    python -m bench.evidence steps --model artifacts/offline-e5-small   # -> bench/results/evidence-steps.json
    python -m bench.evidence cost --model artifacts/offline-e5-small    # -> bench/results/evidence-cost.json

steps: on --pairs (unit, direction) pairs drawn (seeded) from the real units the model gives a direction,
the encoder's Layer Integrated Gradients at each of --steps against --reference steps: the completeness gap
(|sum of attributions - logit change|, relative to the change), whether the strongest span overlaps the
reference's strongest, the character Jaccard of the top spans, for the encoder alone and for the served
evidence (combined with the exact TF-IDF half), and the seconds per pair.

cost: the same units scored as the service scores them (Classifier.predict) and scored then explained
(the explain=true path), in chunks of --chunk units; seconds per unit either way, and per explained
(unit, direction).

route: what the explain=false path of /classify gains from serving/explain_route.py, which parses every
/classify body once more to find an `explain` key: microseconds per request for a one-text body and for the
largest body the service accepts (FIC_MAX_TEXTS texts of FIC_MAX_TEXT_CHARS, sent as JSON escapes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_ARTIFACT, RESULTS_DIR, format_table, header, quiet_transformers, write_results


def _load(model: Path):
    from runtime.classifier import Classifier
    from runtime.threads import configure_threads

    quiet_transformers()
    configure_threads()
    return Classifier.from_artifact(model, precision="fp32", device="cpu")


def _chars(spans) -> set[int]:
    return {k for span in spans for k in range(span.start, span.end)}


def steps(args: argparse.Namespace) -> dict:
    from runtime.evidence import EvidenceSettings, Explainer, lexical_contributions, spans_from_weights
    from training.evaluate_evidence import real_units

    classifier = _load(args.model)
    texts = real_units()
    predictions = classifier.predict(texts, already_clean=True)
    pairs = [(i, classifier.directions.index(label)) for i, pred in enumerate(predictions) for label in pred.labels
             if label in classifier.directions]
    rng = np.random.default_rng(args.seed)
    pairs = [pairs[k] for k in sorted(rng.choice(len(pairs), size=min(args.pairs, len(pairs)), replace=False))]
    capped = classifier._capped(texts)
    settings = EvidenceSettings()
    lexical_p = classifier.lexical.probabilities(capped) if classifier.lexical is not None else None

    def spans_of(per_char: list[np.ndarray]) -> tuple[list, list]:
        encoder_only, served = [], []
        for (i, d), enc in zip(pairs, per_char):
            encoder_only.append(spans_from_weights(capped[i], Explainer.combine(enc, None, 0, None), settings))
            lexical = lexical_contributions(classifier.lexical, capped[i])[:, d] if lexical_p is not None else None
            served.append(spans_from_weights(capped[i], Explainer.combine(
                enc, lexical, predictions[i].scores[classifier.directions[d]],
                float(lexical_p[i, d]) if lexical_p is not None else None), settings))
        return encoder_only, served

    runs = {}
    for n in [*args.steps, args.reference]:
        explainer = Explainer(classifier, EvidenceSettings(n_steps=n))
        started = time.perf_counter()
        per_char = explainer.encoder_contributions(capped, pairs)
        seconds = time.perf_counter() - started
        totals = [float(row.sum()) for row in per_char]
        relative = [delta / max(abs(total - delta), 1e-6) for total, delta in zip(totals, explainer.last_deltas)]
        runs[n] = {"seconds_per_pair": seconds / len(pairs), "relative_gap": relative, "spans": spans_of(per_char)}
        print(f"n_steps {n}: {seconds / len(pairs):.2f} s per pair, median relative gap "
              f"{np.median(relative):.3f}", file=sys.stderr, flush=True)
    reference = runs[args.reference]["spans"]
    rows = []
    for n in args.steps:
        row = {"n_steps": n, "seconds_per_pair": runs[n]["seconds_per_pair"],
               "median_relative_gap": float(np.median(runs[n]["relative_gap"])),
               "max_relative_gap": float(np.max(runs[n]["relative_gap"]))}
        for kind, k in (("encoder", 0), ("served", 1)):
            ours, ref = runs[n]["spans"][k], reference[k]
            top1 = [bool(a and b and _chars(a[:1]) & _chars(b[:1])) for a, b in zip(ours, ref)]
            jaccard = [len(_chars(a) & _chars(b)) / max(len(_chars(a) | _chars(b)), 1) for a, b in zip(ours, ref)]
            row[f"{kind}_top1_overlap"] = float(np.mean(top1))
            row[f"{kind}_top_spans_jaccard"] = float(np.mean(jaccard))
        rows.append(row)
    ref_gap = runs[args.reference]["relative_gap"]
    return {"pairs": len(pairs), "reference_n_steps": args.reference,
            "reference_seconds_per_pair": runs[args.reference]["seconds_per_pair"],
            "reference_median_relative_gap": float(np.median(ref_gap)), "rows": rows}


def cost(args: argparse.Namespace) -> dict:
    from runtime.evidence import Explainer
    from training.evaluate_evidence import real_units

    classifier = _load(args.model)
    texts = real_units()[: args.units]
    explainer = Explainer(classifier)
    classifier.predict(texts[:4], already_clean=True)  # first-call costs out of the timing
    plain, explained, directions = [], [], 0
    for _ in range(args.repeats):
        started = time.perf_counter()
        for start in range(0, len(texts), args.chunk):
            classifier.predict(texts[start:start + args.chunk], already_clean=True)
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        directions = 0
        for start in range(0, len(texts), args.chunk):
            chunk = texts[start:start + args.chunk]
            predictions = classifier.predict(chunk, already_clean=True)
            evidence = explainer.explain(chunk, predictions)
            directions += sum(len(e) for e in evidence)
        explained.append(time.perf_counter() - started)
    plain_s, explained_s = float(np.median(plain)), float(np.median(explained))
    return {"units": len(texts), "unit_directions_explained": directions, "chunk": args.chunk,
            "repeats": args.repeats, "n_steps": explainer.settings.n_steps,
            "explain_false_ms_per_unit": 1000 * plain_s / len(texts),
            "explain_true_ms_per_unit": 1000 * explained_s / len(texts),
            "explain_true_ms_per_unit_direction": 1000 * (explained_s - plain_s) / max(directions, 1),
            "slowdown": explained_s / plain_s}


def route(args: argparse.Namespace) -> dict:
    import json
    import timeit

    from serving.explain_route import asks_to_explain
    from serving.settings import ServiceSettings

    limits = ServiceSettings()
    bodies = {"one text": {"texts": ["推动氢能“制、储、运、加、用”全产业链协同发展"]},
              "largest": {"texts": ["氢" * limits.max_text_chars] * limits.max_texts}}
    out = {}
    for name, payload in bodies.items():
        body = json.dumps(payload).encode()  # ensure_ascii, as Python clients send it: the largest body
        calls = max(3, int(args.seconds / max(timeit.timeit(lambda: asks_to_explain(body), number=1), 1e-6)))
        seconds = min(timeit.repeat(lambda: asks_to_explain(body), number=calls, repeat=3)) / calls
        out[name] = {"body_bytes": len(body), "texts": len(payload["texts"]), "microseconds": 1e6 * seconds}
    return {"parse": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.evidence", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("steps", help="integration steps against a large reference")
    s.add_argument("--pairs", type=int, default=12)
    s.add_argument("--steps", type=lambda v: [int(x) for x in v.split(",")], default=[4, 8, 16, 32])
    s.add_argument("--reference", type=int, default=128)
    s.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("cost", help="explain=true against explain=false, per unit")
    c.add_argument("--units", type=int, default=64, help="first N distinct real units (default 64)")
    c.add_argument("--chunk", type=int, default=16, help="units per call (default 16)")
    c.add_argument("--repeats", type=int, default=1)
    for p in (s, c):
        p.add_argument("--model", type=Path, default=DEFAULT_ARTIFACT)
    r = sub.add_parser("route", help="what routing explain requests adds to every /classify request")
    r.add_argument("--seconds", type=float, default=0.5, help="time to spend per body (default 0.5)")
    args = parser.parse_args(argv)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    head = header("evidence", settings)
    result = {"steps": steps, "cost": cost, "route": route}[args.command](args)
    out = write_results(RESULTS_DIR / f"evidence-{args.command}.json", {**head, **result})
    if args.command == "steps":
        print(format_table(["n_steps", "s/pair", "median gap", "enc top1", "enc jaccard", "served top1",
                            "served jaccard"],
                           [[r["n_steps"], f"{r['seconds_per_pair']:.2f}", f"{r['median_relative_gap']:.3f}",
                             f"{r['encoder_top1_overlap']:.2f}", f"{r['encoder_top_spans_jaccard']:.2f}",
                             f"{r['served_top1_overlap']:.2f}", f"{r['served_top_spans_jaccard']:.2f}"]
                            for r in result["rows"]]))
    elif args.command == "route":
        print(format_table(["body", "texts", "bytes", "parse µs"],
                           [[name, row["texts"], row["body_bytes"], f"{row['microseconds']:.0f}"]
                            for name, row in result["parse"].items()]))
    else:
        print(format_table(["units", "explain=false ms/unit", "explain=true ms/unit", "ms per unit-direction",
                            "slowdown"],
                           [[result["units"], f"{result['explain_false_ms_per_unit']:.1f}",
                             f"{result['explain_true_ms_per_unit']:.1f}",
                             f"{result['explain_true_ms_per_unit_direction']:.1f}", f"{result['slowdown']:.1f}x"]]))
    print(f"-> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
