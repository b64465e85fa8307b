"""Is the evidence faithful? ERASER's comprehensiveness and sufficiency against random spans of equal length.

    python -m training.evaluate_evidence --model artifacts/offline-e5-small

For every real unit (labels/seed_units.jsonl: the units of the crawled seed pages) and every direction
the model gives it (DeYoung et al., ERASER, ACL 2020):
  comprehensiveness = p(direction | unit) - p(direction | unit with the evidence spans deleted)
  sufficiency       = p(direction | unit) - p(direction | the evidence spans alone, in order)
Faithful evidence has high comprehensiveness (the model loses the direction without it) and low
sufficiency (the spans alone keep it). The same is measured for random spans with the same lengths
(placed uniformly at random without overlap, seeded, averaged over --repeats draws), so the ratio says
how much more the model relies on our spans than on any text of that size. Probabilities are the served
(fused) ones. Writes a JSON result (default bench/results/evidence.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.logs import setup_logging

log = logging.getLogger("training.evaluate_evidence")

REAL_UNITS = Path("labels/seed_units.jsonl")
DEFAULT_OUTPUT = Path("bench/results/evidence.json")


def real_units(path: Path = REAL_UNITS) -> list[str]:
    """Distinct cleaned texts of a label file (seed units are cleaned already; cleaning again is a no-op)."""
    from runtime.text import clean

    texts = [clean(json.loads(line)["text"]) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [t for t in dict.fromkeys(texts) if t]


def delete_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """The text without the spans (the rest joined as it stands: Chinese has no spaces to keep)."""
    keep, cursor = [], 0
    for start, end in sorted(spans):
        keep.append(text[cursor:start])
        cursor = max(cursor, end)
    keep.append(text[cursor:])
    return "".join(keep)


def only_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """The spans alone, in text order."""
    return "".join(text[start:end] for start, end in sorted(spans))


def random_spans(length: int, lengths: Sequence[int], rng: np.random.Generator) -> list[tuple[int, int]]:
    """Non-overlapping spans with the given lengths, placed uniformly at random in a text of `length`.

    Stars and bars: the free characters split into len(lengths) + 1 gaps, every split equally likely,
    and the spans in a random order.
    """
    k, free = len(lengths), length - sum(lengths)
    if k == 0:
        return []
    if free < 0:
        raise ValueError("the spans are longer than the text")
    slots = np.sort(rng.choice(free + k, size=k, replace=False))
    order = rng.permutation(k)
    spans, placed = [], 0  # placed: characters of the spans before this one
    for j, slot in enumerate(slots):
        start = int(slot) - j + placed  # slot - j free characters come before span j
        span_len = int(lengths[order[j]])
        spans.append((start, start + span_len))
        placed += span_len
    return spans


def measure(classifier, texts: Sequence[str], settings=None, repeats: int = 5, seed: int = 0) -> dict:
    """Comprehensiveness and sufficiency of the evidence and of random spans, per (unit, direction) and averaged."""
    from runtime.evidence import Explainer

    rng = np.random.default_rng(seed)
    predictions = classifier.predict(texts, already_clean=True)
    chosen = [i for i, pred in enumerate(predictions) if pred.labels != [classifier.other]]
    explainer = Explainer(classifier, settings)
    started = time.perf_counter()
    evidence = explainer.explain([texts[i] for i in chosen], [predictions[i] for i in chosen])
    explain_s = time.perf_counter() - started
    rows, variants = [], []  # variants: texts to score, each with (row, kind)
    capped = classifier._capped(list(texts))
    for i, per_direction in zip(chosen, evidence):
        text = capped[i]
        for direction, spans in per_direction.items():
            ours = [(s["start"], s["end"]) for s in spans]
            row = {"unit": i, "direction": direction, "p": predictions[i].scores[direction],
                   "spans": [s["text"] for s in spans], "chars": sum(e - s for s, e in ours), "length": len(text)}
            rows.append(row)
            variants += [(delete_spans(text, ours), len(rows) - 1, "removed"), (only_spans(text, ours), len(rows) - 1,
                                                                                "kept")]
            for _ in range(repeats):
                drawn = random_spans(len(text), [e - s for s, e in ours], rng)
                variants += [(delete_spans(text, drawn), len(rows) - 1, "random_removed"),
                             (only_spans(text, drawn), len(rows) - 1, "random_kept")]
    probs = classifier.probabilities([v[0] for v in variants]) if variants else np.zeros((0, 0))
    index = {d: j for j, d in enumerate(classifier.directions)}
    collected: dict[tuple[int, str], list[float]] = {}
    for (_, r, kind), p in zip(variants, probs):
        collected.setdefault((r, kind), []).append(float(p[index[rows[r]["direction"]]]))
    for r, row in enumerate(rows):
        row["comprehensiveness"] = row["p"] - collected[(r, "removed")][0]
        row["sufficiency"] = row["p"] - collected[(r, "kept")][0]
        row["random_comprehensiveness"] = row["p"] - float(np.mean(collected[(r, "random_removed")]))
        row["random_sufficiency"] = row["p"] - float(np.mean(collected[(r, "random_kept")]))

    def mean(key: str) -> float:
        return float(np.mean([row[key] for row in rows])) if rows else 0.0

    summary = {key: mean(key) for key in ("comprehensiveness", "sufficiency", "random_comprehensiveness",
                                          "random_sufficiency")}
    summary["comprehensiveness_ratio"] = (summary["comprehensiveness"] / summary["random_comprehensiveness"]
                                          if summary["random_comprehensiveness"] > 0 else None)
    summary.update({"units": len(texts), "units_with_a_direction": len(chosen), "unit_directions": len(rows),
                    "without_evidence": sum(1 for row in rows if not row["spans"]),
                    "evidence_share_of_characters": (sum(r["chars"] for r in rows) / sum(r["length"] for r in rows)
                                                     if rows else 0.0),
                    "explain_seconds": explain_s})
    return {"summary": summary, "rows": rows}


def table(summary: dict) -> str:
    ratio = summary["comprehensiveness_ratio"]
    lines = [f"{'':<20}{'evidence':>10}{'random':>10}{'ratio':>8}",
             f"{'comprehensiveness':<20}{summary['comprehensiveness']:>10.3f}{summary['random_comprehensiveness']:>10.3f}"
             f"{(f'{ratio:.1f}x' if ratio is not None else '-'):>8}",
             f"{'sufficiency':<20}{summary['sufficiency']:>10.3f}{summary['random_sufficiency']:>10.3f}{'':>8}",
             f"({summary['unit_directions']} unit-directions of {summary['units_with_a_direction']} units with a "
             f"direction, of {summary['units']} real units; evidence covers "
             f"{100 * summary['evidence_share_of_characters']:.1f}% of their characters; higher comprehensiveness "
             "and lower sufficiency are better)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate_evidence", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="training artifact folder")
    parser.add_argument("--units", type=Path, default=REAL_UNITS,
                        help=f"label file of real units (default {REAL_UNITS})")
    parser.add_argument("--precision", default=None,
                        help="default: the model's recorded precision, else fp32 (onnx precisions cannot be explained)")
    parser.add_argument("--repeats", type=int, default=5, help="random span draws per unit-direction (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random spans (default 0)")
    parser.add_argument("--top-k", type=int, default=None, help="spans per direction (default runtime.evidence's)")
    parser.add_argument("--n-steps", type=int, default=None, help="integration steps (default runtime.evidence's)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"JSON result (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    setup_logging()
    from dataclasses import replace

    from runtime.classifier import Classifier
    from runtime.errors import ArtifactError
    from runtime.evidence import EvidenceError, EvidenceSettings
    from runtime.threads import configure_threads

    configure_threads()
    settings = EvidenceSettings()
    if args.top_k is not None:
        settings = replace(settings, top_k=args.top_k)
    if args.n_steps is not None:
        settings = replace(settings, n_steps=args.n_steps)
    try:
        classifier = Classifier.from_artifact(args.model, precision=args.precision)
        result = measure(classifier, real_units(args.units), settings, args.repeats, args.seed)
    except (ArtifactError, EvidenceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = ["python -m training.evaluate_evidence", *(argv if argv is not None else sys.argv[1:])]
    result = {"command": " ".join(command),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": str(args.model),
              "precision": classifier.precision, "units_file": str(args.units), "repeats": args.repeats,
              "seed": args.seed, "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
              **result}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(table(result["summary"]))
    print(f"-> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
