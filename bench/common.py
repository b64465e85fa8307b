"""Helpers shared by the benchmarks: the corpus, model shapes, the random BERT-base-sized
artifact, FLOP counting, the matmul peak, machine facts, results files and tables."""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_ARTIFACT = ROOT / "artifacts" / "offline-e5-small"
CORPUS_FILES = ("labels/seed_units.jsonl", "labels/authored/*.jsonl")
TRAIN_HINT = "train it with python -m training.train --config configs/offline-e5-small.yaml (or pass --artifact)"


# ----------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class CorpusUnit:
    text: str  # cleaned with runtime.text.clean, as the model sees it
    labels: tuple[str, ...]


def load_corpus() -> list[CorpusUnit]:
    """Every labelled unit (seed + authored), cleaned; empty ones dropped."""
    from runtime.text import clean

    units = []
    for pattern in CORPUS_FILES:
        for path in sorted(glob.glob(str(ROOT / pattern))):
            for line in Path(path).read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                record = json.loads(line)
                text = clean(record["text"])
                if text:
                    units.append(CorpusUnit(text, tuple(record.get("labels", ()))))
    if not units:
        raise SystemExit(f"error: no units found in {', '.join(CORPUS_FILES)} under {ROOT}")
    return units


def benchmark_units(n: int, seed: int = 0) -> list[str]:
    """n real-length units: the corpus cycled to n, in a fixed shuffled order.

    Shuffling mixes short noise lines with long sentences, as a crawl does; the seed
    keeps every run (and every variant inside a run) on the same sequence.
    """
    texts = [unit.text for unit in load_corpus()]
    repeated = texts * (n // len(texts) + 1)
    random.Random(seed).shuffle(repeated)
    return repeated[:n]


# ----------------------------------------------------------------------------- models


@dataclass(frozen=True)
class BertShape:
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int | None  # None: exactly the corpus characters (plus specials)


# bert-base-chinese's dimensions; the offline-small config's dimensions.
BASE = BertShape(layers=12, hidden=768, heads=12, intermediate=3072, vocab=21128)
SMALL = BertShape(layers=4, hidden=256, heads=4, intermediate=1024, vocab=None)


def bench_vocab(texts: Iterable[str], size: int | None) -> dict[str, int]:
    """The corpus character vocabulary, padded with filler tokens up to `size`.

    Filler entries never occur in text, but they make the embedding matrix (and the
    tokenizer's lookup table) as large as bert-base-chinese's.
    """
    from training.model import char_vocab

    vocab = char_vocab(texts)
    filler = 0
    while size is not None and len(vocab) < size:
        vocab[f"[unused{filler}]"] = len(vocab)
        filler += 1
    return vocab


def build_bert(shape: BertShape, texts: Sequence[str], directions: Sequence[str], max_length: int, seed: int = 0):
    """A randomly initialised multi-label BertForSequenceClassification and its tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    vocab = bench_vocab(texts, shape.vocab)
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True)
    tokenizer.model_max_length = max_length
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=max(512, max_length),
        pad_token_id=vocab["[PAD]"],
        id2label=dict(enumerate(directions)),
        label2id={label: i for i, label in enumerate(directions)},
        num_labels=len(directions),
        problem_type="multi_label_classification",
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config), tokenizer


def require_artifact(path: Path) -> dict:
    """artifact.json of the trained model, or exit with the command that makes it."""
    meta_path = path / "artifact.json"
    if not meta_path.is_file():
        raise SystemExit(f"error: no trained artifact at {path} (no artifact.json); {TRAIN_HINT}")
    return json.loads(meta_path.read_text(encoding="utf-8"))


def write_base_artifact(trained: Path, out: Path, seed: int = 0) -> Path:
    """Save a random BERT-base-sized model as an artifact folder that Classifier.from_artifact loads.

    Labels, thresholds, max_length and preprocessing version are copied from the trained
    artifact, so the same prediction code (thresholds, `other` rule) runs on both models.
    Its predictions mean nothing: it exists to time a model of bert-base-chinese's size.
    """
    meta = require_artifact(trained)
    model, tokenizer = build_bert(BASE, [u.text for u in load_corpus()], meta["directions"], meta["max_length"], seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    base_meta = {
        **meta,
        "name": "bert-base-sized-random",
        "base_model": "random weights, bert-base-chinese dimensions (benchmark only)",
        "from_scratch": True,
        "precision": "fp32",
        "metrics": {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / "artifact.json").write_text(json.dumps(base_meta, ensure_ascii=False, indent=2), encoding="utf-8")
    for name in ("labels.json", "thresholds.json"):
        if (trained / name).is_file():
            (out / name).write_bytes((trained / name).read_bytes())
    return out


def model_shape(config) -> dict:
    """The dimensions that decide a BERT's cost, from its transformers config."""
    return {
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "heads": config.num_attention_heads,
        "intermediate": config.intermediate_size,
        "vocab": config.vocab_size,
    }


# ----------------------------------------------------------------------------- FLOPs and peak


def padded_shapes(lengths: Sequence[int], batch_size: int, length_sorted: bool) -> list[tuple[int, int]]:
    """(batch, padded sequence length) of every forward pass, replicating a batching policy.

    length_sorted=True is Classifier's policy (`runtime.batching.plan_batches`: length-sorted
    batches of at most batch_size, each padded to its longest); False is the pipeline's
    (chunks in input order, same padding).
    """
    if length_sorted:
        from runtime.batching import plan_batches

        return [(len(idx), max(lengths[i] for i in idx)) for idx in plan_batches(lengths, batch_size)]
    return [(len(lengths[start:start + batch_size]), max(lengths[start:start + batch_size]))
            for start in range(0, len(lengths), batch_size)]


def bert_forward_flops(shape: dict, num_labels: int, batches: Iterable[tuple[int, int]]) -> float:
    """FLOPs of the forward passes, padding included (padding is computed, so it costs time).

    Per layer and token: Q, K, V, output projections (4·h²) and the feed-forward (2·h·i)
    multiply-adds; per layer and sequence: QKᵀ and attention·V (2·s²·h multiply-adds).
    Pooler and classifier run on [CLS] only. Embedding lookups, layer norms and softmax
    are not matmuls and are left out. 2 FLOPs per multiply-add.
    """
    h, i, layers = shape["hidden"], shape["intermediate"], shape["layers"]
    total = 0.0
    for batch, seq in batches:
        per_layer = (4 * h * h + 2 * h * i) * batch * seq + 2 * seq * seq * h * batch
        total += 2 * (layers * per_layer + (h * h + h * num_labels) * batch)
    return total


def matmul_peak_gflops(dtype_name: str, size: int = 2048, calls: int = 5, repeats: int = 3) -> float:
    """Median GFLOP/s of torch.matmul on size×size matrices: the ceiling a model's matmuls can reach."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.matmul(a, b)  # warm-up: oneDNN/MKL pick and cache their kernels on the first call
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            torch.matmul(a, b)
        rates.append(2 * size**3 * calls / (time.perf_counter() - started) / 1e9)
    return statistics.median(rates)


# ----------------------------------------------------------------------------- machine and versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_busy_cores(seconds: float = 1.0) -> float | None:
    """How many cores other processes keep busy right now (from /proc/stat over `seconds`).

    Sampled while this process sleeps, so it counts everyone else. A second CPU-bound
    process on a 2-core machine makes 2-thread forward passes of small batches many
    times slower (OpenMP threads wait on a descheduled peer), so results from a busy
    machine are not comparable.
    """
    def snapshot() -> tuple[int, int] | None:
        try:
            # user nice system idle iowait irq softirq steal; guest time is already inside user
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    before = snapshot()
    time.sleep(seconds)
    after = snapshot()
    if before is None or after is None or after[0] == before[0]:
        return None
    busy_share = 1 - (after[1] - before[1]) / (after[0] - before[0])
    return busy_share * (os.cpu_count() or 1)


def busy_warning(busy: float | None, cores: int) -> str | None:
    if busy is None or busy < 0.25:
        return None
    return (f"warning: other processes were using {busy:.1f} of {cores} cores when the benchmark started; "
            "results will be low and noisy, rerun on an idle machine")


def machine_info() -> dict:
    from runtime.threads import cpu_quota

    flags = cpu_flags()
    busy = cpu_busy_cores()
    return {
        "cpu_busy_cores_before_start": busy,
        "busy_warning": busy_warning(busy, cpu_quota()),
        "cpu_model": cpu_model(),
        "cores_available": cpu_quota(),  # the cgroup quota / affinity, not the host's count
        "host_logical_cpus": os.cpu_count(),
        "native_bf16": sorted(flags & {"avx512_bf16", "amx_bf16"}),
        "avx512": "avx512f" in flags,
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def library_versions() -> dict:
    versions = {"python": sys.version.split()[0]}
    for package in ("torch", "transformers", "bentoml", "tokenizers", "numpy", "httpx", "onnx", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def quiet_transformers() -> None:
    """Silence transformers' weight-loading progress bars and info logs: they would bury the tables."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


# ----------------------------------------------------------------------------- timing and results


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def time_call(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def header(benchmark: str, settings: dict) -> dict:
    """The part of every results file that says what ran, where and with which libraries.

    Prints a warning when the CPU is already busy: such results are not worth comparing.
    """
    machine = machine_info()
    if machine["busy_warning"]:
        print(machine["busy_warning"], file=sys.stderr, flush=True)
    return {
        "benchmark": benchmark,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([f"python -m bench.{benchmark}", *sys.argv[1:]]),
        "settings": settings,
        "machine": machine,
        "versions": library_versions(),
    }


def write_results(path: Path, payload: dict) -> Path:
    """Write JSON atomically (temp file + rename) so an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table: right-aligned numbers, left-aligned text."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in cells) if cells else False for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(row) for row in cells)])


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").rstrip("%x×"))
        return True
    except ValueError:
        return text == "-"


def parse_choices(value: str, allowed: Sequence[str]) -> list[str]:
    """'a,b' -> ['a', 'b'], in the order given, rejecting unknown names with one clear line."""
    chosen = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}, comma-separated (got {value!r})")
    return chosen


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number

