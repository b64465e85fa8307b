"""Training speed on the CPU: samples/s and seconds per epoch, fp32 vs bf16 autocast.

    python -m bench.training                         # the e5 recipe, with its frozen parts and with none
    python -m bench.training --models small,base     # from-scratch shapes: small 60 steps, base 20
    python -m bench.training --models small --steps 5 --repeats 1 --profile 0
    python -m bench.training --models e5 --tricks compile,fused-adamw   # does either speed up fp32 steps?
    python -m bench.training --models e5 --precisions fp32 --tricks no-cache,freeze-0+dropout-0.1,freeze-0

e5: the default model's real recipe (configs/offline-e5-small.yaml): the pretrained
multilingual-e5-small with mean pooling, its "query: " prefix, the recipe's frozen parts
("e5": embeddings and the lowest 6 layers, dropout off, their output computed once per unit
before the timed steps as training does, train.cache_frozen_layers) or nothing frozen
("e5-unfrozen"), and the recipe's two-learning-rate AdamW. small and base:
an offline-small-shaped model (4 layers, hidden 256, the corpus character vocabulary) and a
BERT-base-sized one (12 layers, hidden 768, vocabulary 21,128) from random weights with one
AdamW. All take steps on batches of real units tokenised to a fixed max_length, after a few
untimed warm-up steps; repeats are interleaved across precisions. Seconds per epoch is the
corpus size divided by samples/s. bf16 is timed only on CPUs with native bf16 (AVX-512 BF16
or AMX): emulated, it is many times slower than fp32 and nobody would train that way.
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
MODELS = ("e5", "e5-unfrozen", "small", "base")
DEFAULT_STEPS = {"small": 60, "base": 20, "e5": 20, "e5-unfrozen": 20}  # similar wall time per model
E5_CONFIG = ROOT / "configs" / "offline-e5-small.yaml"
TRAINING_PRECISIONS = ("fp32", "bf16")  # the candidates train.precision=auto times
# freeze-N: model.freeze_layers=N (freeze-0: the whole encoder trained); dropout-P: model.dropout=P
# no-cache: train.cache_frozen_layers=false (the frozen layers run in every step)
NAMED_TRICKS = ("compile", "fused-adamw", "no-dropout", "no-cache")
TRICKS = (*NAMED_TRICKS, "freeze-N", "dropout-P")


def parse_tricks(value: str) -> list[str]:
    """'compile,no-dropout+freeze-4' -> ['compile', 'no-dropout+freeze-4']: + joins tricks timed together."""
    import re

    chosen = [item.strip() for item in value.split(",") if item.strip()]
    bad = [part for item in chosen for part in item.split("+")
           if part not in NAMED_TRICKS and not re.fullmatch(r"freeze-\d+|dropout-(0|0?\.\d+)", part)]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {','.join(TRICKS)} (N a whole number, P in [0, 1)), "
                                         f"comma-separated, + to combine (got {value!r})")
    return chosen


def make_batches(tokenizer, corpus, directions: list[str], batch_size: int, max_length: int, count: int, seed: int,
                 prefix: str = "") -> list[dict]:
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
        enc = tokenizer([prefix + u.text for u in chosen], truncation=True, max_length=max_length, padding="max_length",
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

    def __init__(self, model, precision: str, batches: list[dict], lr: float, optimizer=None, cache=None):
        import torch

        self.model = model.train()  # as in training: BatchNorm batch statistics, dropout if the recipe has it
        self.optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        self.dtype = torch.bfloat16 if precision == "bf16" else None
        self.batches = batches
        self.position = 0
        self.cache = cache  # training.frozen_cache.FrozenLayersCache, filled; None: every layer runs
        self.cache_fill_seconds_per_unit = None

    def steps(self, n: int) -> None:
        import contextlib

        with self.cache.active() if self.cache is not None else contextlib.nullcontext():
            self._steps(n)

    def _steps(self, n: int) -> None:
        import torch

        for _ in range(n):
            batch = self.batches[self.position % len(self.batches)]
            self.position += 1
            # transformers.Trainer's bf16=True on CPU is this autocast: weights and optimizer stay fp32.
            # Named regions, so `--profile` can say what share of a step each part takes.
            with torch.profiler.record_function("forward"), \
                    torch.autocast("cpu", dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
                loss = self.model(**batch).loss
            with torch.profiler.record_function("backward"):
                loss.backward()
            with torch.profiler.record_function("optimizer"):
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)


def profile_steps(trainer: StepRunner, steps: int, top: int = 15) -> dict:
    """torch.profiler over `steps` steps: the share of each region and the operators that cost most."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.steps(steps)
    events = prof.key_averages()
    regions = {e.key: e.cpu_time_total / 1e6 for e in events if e.key in ("forward", "backward", "optimizer")}
    total = sum(regions.values())
    ops = sorted((e for e in events if e.key not in regions), key=lambda e: -e.self_cpu_time_total)[:top]
    self_total = sum(e.self_cpu_time_total for e in events) or 1
    return {
        "steps": steps,
        "seconds_per_step": total / steps,
        "region_share": {k: v / total for k, v in regions.items()},
        "top_ops_by_self_time": [{"op": e.key, "calls_per_step": e.count / steps,
                                  "self_share": e.self_cpu_time_total / self_total} for e in ops],
        "threads": torch.get_num_threads(),
    }


def e5_trainer(frozen: bool, precision: str, args, corpus, directions: list[str], trick: str | None = None
               ) -> "StepRunner":
    """The default recipe's model and optimizer, as training.train builds them, with `trick`'s changes
    (see TRICKS; several joined by +)."""
    import torch

    from runtime.taxonomy import load_taxonomy
    from training.config import load_config
    from training.model import build_model
    from training.train import frozen_layers_cache, make_optimizer

    parts = (trick or "").split("+")
    overrides = [] if frozen else ["model.freeze_word_embeddings=false", "model.freeze_layers=0"]
    overrides += ["model.dropout=0"] if "no-dropout" in parts else []  # no masks to draw; the fused attention kernel
    overrides += [f"model.dropout={part.split('-')[1]}" for part in parts if part.startswith("dropout-")]
    overrides += [f"model.freeze_layers={part.split('-')[1]}" for part in parts if part.startswith("freeze-")]
    overrides += ["train.cache_frozen_layers=false"] if "no-cache" in parts else []
    cfg = load_config(E5_CONFIG, overrides)
    torch.manual_seed(args.seed)
    model, tokenizer = build_model(cfg.model, load_taxonomy(ROOT / cfg.data.taxonomy), [], args.max_length)
    batches = make_batches(tokenizer, corpus, directions, args.batch_size, args.max_length,
                           args.warmup_steps + (args.steps or DEFAULT_STEPS["e5"]) * args.repeats, args.seed,
                           prefix=cfg.model.text_prefix)
    optimizer = make_optimizer(model, cfg, fused=True if "fused-adamw" in parts else None)
    # As training.train does (the same function): the frozen layers' output computed once per unit,
    # before the steps, where the recipe allows it.
    units = [ids[mask.bool()].tolist() for batch in batches
             for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    fill_seconds, cache = time_call(lambda: frozen_layers_cache(cfg, model, tokenizer, [{"input_ids": units}],
                                                                precision, progress=False))
    if "compile" in parts:
        model = torch.compile(model)
    runner = StepRunner(model, precision, batches, cfg.train.learning_rate, optimizer=optimizer, cache=cache)
    if cache is not None:
        runner.cache_fill_seconds_per_unit = fill_seconds / len(cache.states)
    return runner


def benchmark_model(name: str, args, corpus, directions: list[str]) -> dict:
    from runtime.threads import cpu_has_native_bf16

    steps = args.steps or DEFAULT_STEPS[name]
    trainers: dict[str, StepRunner] = {}
    skipped = {}
    for precision in args.precisions:
        if precision == "bf16" and not cpu_has_native_bf16():
            skipped[precision] = "no native bf16 on this CPU (AVX-512 BF16 or AMX): emulated bf16 is slower than fp32"
            continue
        if name.startswith("e5"):
            trainers[precision] = e5_trainer(name == "e5", precision, args, corpus, directions)
            continue
        # The same seed for each precision: both start from identical weights.
        model, tokenizer = build_bert(SHAPES[name], [u.text for u in corpus], directions, args.max_length, args.seed)
        batches = make_batches(tokenizer, corpus, directions, args.batch_size, args.max_length,
                               args.warmup_steps + steps * args.repeats, args.seed)
        trainers[precision] = StepRunner(model, precision, batches, args.lr)
    if name.startswith("e5") and "fp32" in trainers:
        for trick in args.tricks:  # fp32 again, with one change each
            trainers[f"fp32+{trick}"] = e5_trainer(name == "e5", "fp32", args, corpus, directions, trick=trick)
    if not trainers:
        return {"steps": steps, "skipped": skipped, "precisions": {}, "parameters": 0, "bf16_over_fp32": None}
    warmup_seconds = {}
    for key, trainer in trainers.items():
        # allocator, kernel choice and optimizer state are set up here (and torch.compile compiles)
        warmup_seconds[key] = time_call(lambda: trainer.steps(args.warmup_steps))[0]
    seconds: dict[str, list[float]] = {p: [] for p in trainers}
    for _ in range(args.repeats):
        for precision, trainer in trainers.items():  # interleaved, so load drift hits both alike
            seconds[precision].append(time_call(lambda: trainer.steps(steps))[0])

    samples = steps * args.batch_size
    results = {}
    for precision, times in seconds.items():
        rate = samples / median(times)
        results[precision] = {"seconds": times, "median_seconds": median(times), "samples_per_s": rate,
                              "warmup_seconds": warmup_seconds[precision],
                              "over_fp32": rate / (samples / median(seconds["fp32"])) if "fp32" in seconds else None,
                              "seconds_per_step": median(times) / steps, "seconds_per_epoch": len(corpus) / rate,
                              "trainable_parameters": sum(p.numel() for p in trainers[precision].model.parameters()
                                                          if p.requires_grad),
                              # one-off, before the first step: the frozen layers over each distinct unit
                              "cache_fill_seconds_per_unit": trainers[precision].cache_fill_seconds_per_unit}
    fp32, bf16 = results.get("fp32"), results.get("bf16")
    first = next(iter(trainers.values())).model
    profiles = {precision: profile_steps(trainer, args.profile) for precision, trainer in trainers.items()
                if precision in TRAINING_PRECISIONS} if args.profile else {}
    return {
        "profile": profiles,
        "shape": model_shape(first.config),
        "parameters": first.num_parameters(),
        "trainable_parameters": sum(p.numel() for p in first.parameters() if p.requires_grad),
        "steps": steps,
        "skipped": skipped,
        "precisions": results,
        "bf16_over_fp32": bf16["samples_per_s"] / fp32["samples_per_s"] if fp32 and bf16 else None,
    }


def print_report(report: dict) -> None:
    rows = []
    for name, result in report["models"].items():
        for precision, r in result["precisions"].items():
            ratio = r.get("over_fp32") if precision != "fp32" else None
            trained = r.get("trainable_parameters", result.get("trainable_parameters", 0))  # tricks may freeze
            rows.append([name, result["parameters"] / 1e6, trained / 1e6, precision,
                         result["steps"], r["samples_per_s"], r["seconds_per_step"], r["seconds_per_epoch"],
                         f"{ratio:.2f}x" if ratio else None])
        for precision, reason in result.get("skipped", {}).items():
            rows.append([name, None, None, precision, None, None, None, None, f"skipped: {reason}"])
    s = report["settings"]
    print(f"\nbatch {s['batch_size']} x {s['max_length']} tokens, AdamW, medians of {s['repeats']} repeats; "
          f"epoch = {report['corpus_units']} units")
    print(format_table(["model", "M params", "M trained", "precision", "steps", "samples/s", "s/step", "s/epoch",
                        "/ fp32"], rows))
    for name, result in report["models"].items():
        for precision, r in result["precisions"].items():
            if r.get("cache_fill_seconds_per_unit"):
                print(f"{name} {precision}: frozen layers computed once per unit before the steps, "
                      f"{r['cache_fill_seconds_per_unit'] * 1000:.1f} ms per unit")
        for precision, prof in result.get("profile", {}).items():
            shares = ", ".join(f"{k} {v:.0%}" for k, v in prof["region_share"].items())
            ops = ", ".join(f"{o['op']} {o['self_share']:.0%}" for o in prof["top_ops_by_self_time"][:6])
            print(f"{name} {precision} profile ({prof['steps']} steps): {shares}; top operators by self time: {ops}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.training",
        description="Training samples/s and seconds per epoch on the CPU, fp32 vs bf16 autocast, for the e5 "
                    "recipe (with its frozen parts, or nothing frozen) and from-scratch small and "
                    "BERT-base-sized models.",
    )
    parser.add_argument("--models", type=lambda v: parse_choices(v, list(MODELS)), default=["e5", "e5-unfrozen"],
                        help="e5, e5-unfrozen (the default recipe; the same with nothing frozen), small "
                             "(4 layers, hidden 256), base (12 layers, hidden 768); default e5,e5-unfrozen")
    parser.add_argument("--precisions", type=lambda v: parse_choices(v, list(TRAINING_PRECISIONS)),
                        default=list(TRAINING_PRECISIONS), help="default fp32,bf16")
    parser.add_argument("--tricks", type=lambda v: parse_tricks(v) if v else [], default=[],
                        help="e5 only: also time fp32 with each of these changes to the default recipe, e.g. "
                             "compile,fused-adamw,no-dropout,no-cache,freeze-4,dropout-0.1 (torch.compile of the "
                             "model; AdamW's fused kernel; model.dropout=0; train.cache_frozen_layers=false; "
                             "model.freeze_layers=4; model.dropout=0.1); join with + to "
                             "time several together (freeze-0+dropout-0.1: the previous recipe); default none")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="timed optimizer steps per repeat (default 60 for small, 20 for the others)")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed repeats; the median is reported (default 3)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="default 16, as configs/offline-small.yaml")
    parser.add_argument("--max-length", type=positive_int, default=64, help="tokens per unit, padded (default 64)")
    parser.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (default 3e-4)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: the CPU quota)")
    parser.add_argument("--profile", type=int, default=5,
                        help="after timing, run torch.profiler over this many steps and report where a step's time "
                             "goes (default 5; 0 skips it)")
    parser.add_argument("--seed", type=int, default=0, help="default 0")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "training.json",
                        help="results file (default bench/results/training.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from runtime.taxonomy import load_taxonomy
    from runtime.threads import configure_threads

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
