"""Training speed on the CPU: samples/s and seconds per epoch, fp32 vs bf16 autocast.

    python -m bench.training                         # small: 60 steps, base: 20 steps, 3 repeats
    python -m bench.training --models small --steps 5 --repeats 1

For an offline-small-shaped model (4 layers, hidden 256, the corpus character vocabulary)
and a BERT-base-sized one (12 layers, hidden 768, vocabulary 21,128), both from random
weights: AdamW steps on batches of real units tokenised to a fixed max_length, after a
few untimed warm-up steps. Repeats are interleaved across precisions. Seconds per epoch
is the corpus size divided by samples/s.
"""

from __future__ import annotations

import sys

if not __package__:  # run as a file, bench/training.py would shadow the training package
    sys.exit("run it from the repository root as a module: python -m bench.training --help")

import argparse
import random
from pathlib import Path

from bench.common import (
    BASE,
    RESULTS_DIR,
    ROOT,
    SMALL,
    BertShape,
    build_bert,
    format_table,
    header,
    load_corpus,
    median,
    model_shape,
    parse_choices,
    positive_int,
    quiet_transformers,
    time_call,
    write_results,
)

SHAPES: dict[str, BertShape] = {"small": SMALL, "base": BASE}
DEFAULT_STEPS = {"small": 60, "base": 20}  # about the same wall time per model at stack-notes speeds
PRECISIONS = ("fp32", "bf16")


def make_batches(tokenizer, corpus, directions: list[str], batch_size: int, max_length: int, count: int, seed: int) -> list[dict]:
    """`count` batches of real units with their multi-hot labels, padded to max_length.

    Fixed-length padding makes every step the same size, so fp32 and bf16 (and repeats)
    do identical work; training itself uses length-grouped batches, so real epochs are
    somewhat faster than this estimate on our mostly short units.
    """
    import torch

    order = list(range(len(corpus)))
    random.Random(seed).shuffle(order)
    index = {label: i for i, label in enumerate(directions)}
    batches = []
    for b in range(count):
        chosen = [corpus[order[(b * batch_size + k) % len(order)]] for k in range(batch_size)]
        enc = tokenizer([u.text for u in chosen], truncation=True, max_length=max_length, padding="max_length",
                        return_tensors="pt")
        labels = torch.zeros(batch_size, len(directions))
        for row, unit in enumerate(chosen):
            for label in unit.labels:
                if label in index:  # `other` is the absence of every direction
                    labels[row, index[label]] = 1.0
        batches.append({**enc, "labels": labels})
    return batches


class StepRunner:
    """One model and its AdamW optimizer at one precision; `steps(n)` runs n optimizer steps."""

    def __init__(self, model, precision: str, batches: list[dict], lr: float):
        import torch

        self.model = model.train()  # dropout on, as in training
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        self.dtype = torch.bfloat16 if precision == "bf16" else None
        self.batches = batches
        self.position = 0

    def steps(self, n: int) -> None:
        import torch

        for _ in range(n):
            batch = self.batches[self.position % len(self.batches)]
            self.position += 1
            # transformers.Trainer's bf16=True on CPU is this autocast: weights and optimizer stay fp32.
            with torch.autocast("cpu", dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
                loss = self.model(**batch).loss
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


def benchmark_model(name: str, args, corpus, directions: list[str]) -> dict:
    shape = SHAPES[name]
    steps = args.steps or DEFAULT_STEPS[name]
    trainers: dict[str, StepRunner] = {}
    for precision in args.precisions:
        # The same seed for each precision: both start from identical weights.
        model, tokenizer = build_bert(shape, [u.text for u in corpus], directions, args.max_length, args.seed)
        batches = make_batches(tokenizer, corpus, directions, args.batch_size, args.max_length,
                               args.warmup_steps + steps * args.repeats, args.seed)
        trainers[precision] = StepRunner(model, precision, batches, args.lr)
    for trainer in trainers.values():
        trainer.steps(args.warmup_steps)  # allocator, kernel choice and optimizer state are set up here
    seconds: dict[str, list[float]] = {p: [] for p in trainers}
    for _ in range(args.repeats):
        for precision, trainer in trainers.items():  # interleaved, so load drift hits both alike
            seconds[precision].append(time_call(lambda: trainer.steps(steps))[0])

    samples = steps * args.batch_size
    results = {}
    for precision, times in seconds.items():
        rate = samples / median(times)
        results[precision] = {"seconds": times, "median_seconds": median(times), "samples_per_s": rate,
                              "seconds_per_step": median(times) / steps, "seconds_per_epoch": len(corpus) / rate}
    fp32, bf16 = results.get("fp32"), results.get("bf16")
    first = next(iter(trainers.values())).model
    return {
        "shape": model_shape(first.config),
        "parameters": first.num_parameters(),
        "steps": steps,
        "precisions": results,
        "bf16_over_fp32": bf16["samples_per_s"] / fp32["samples_per_s"] if fp32 and bf16 else None,
    }


def print_report(report: dict) -> None:
    rows = []
    for name, result in report["models"].items():
        for precision, r in result["precisions"].items():
            ratio = result["bf16_over_fp32"] if precision == "bf16" else None
            rows.append([name, result["parameters"] / 1e6, precision, result["steps"], r["samples_per_s"],
                         r["seconds_per_step"], r["seconds_per_epoch"], f"{ratio:.2f}x" if ratio else None])
    s = report["settings"]
    print(f"\nbatch {s['batch_size']} x {s['max_length']} tokens, AdamW, medians of {s['repeats']} repeats; "
          f"epoch = {report['corpus_units']} units")
    print(format_table(["model", "M params", "precision", "steps", "samples/s", "s/step", "s/epoch", "bf16/fp32"], rows))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.training",
        description="Training samples/s and seconds per epoch on the CPU, fp32 vs bf16 autocast, for an "
                    "offline-small-shaped and a BERT-base-sized model.",
    )
    parser.add_argument("--models", type=lambda v: parse_choices(v, list(SHAPES)), default=list(SHAPES),
                        help="small (4 layers, hidden 256), base (12 layers, hidden 768); default small,base")
    parser.add_argument("--precisions", type=lambda v: parse_choices(v, list(PRECISIONS)),
                        default=list(PRECISIONS), help="default fp32,bf16")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="timed optimizer steps per repeat (default 60 for small, 20 for base)")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed repeats; the median is reported (default 3)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="default 16, as configs/offline-small.yaml")
    parser.add_argument("--max-length", type=positive_int, default=64, help="tokens per unit, padded (default 64)")
    parser.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (default 3e-4)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: the CPU quota)")
    parser.add_argument("--seed", type=int, default=0, help="default 0")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "training.json",
                        help="results file (default bench/results/training.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from training.runtime import configure_threads
    from training.taxonomy import load_taxonomy

    args.threads = configure_threads(args.threads)
    quiet_transformers()
    corpus = load_corpus()
    directions = list(load_taxonomy(ROOT / "labels" / "taxonomy.yaml").directions)
    report = header("training", {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    report["corpus_units"] = len(corpus)
    report["models"] = {}
    for name in args.models:
        print(f"{name}: building and timing ...", flush=True)
        report["models"][name] = benchmark_model(name, args, corpus, directions)
        write_results(args.out, report)  # after each model, so a long run keeps what it finished
    print_report(report)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
