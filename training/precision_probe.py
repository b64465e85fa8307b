"""`train.precision: auto`: time a few real training steps in each precision the device offers, keep the fastest.

CPU flags do not predict speed. On an Intel Xeon with AVX-512 BF16 (no AMX) bf16 autocast trained
the e5 default at 0.49x fp32's samples/s, yet a flag-based `auto` chose bf16 there and the
Quickstart took 28 minutes. So what the CPU (or torch) says only makes bf16 a *candidate*; the
choice is made by timing the steps the Trainer is about to run: the same model (with the
frozen-layer cache active when training will use it), a batch of real training units of typical
length at the training batch size, forward under `torch.autocast` and backward, as the Trainer does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from runtime.threads import cpu_offers_bf16

log = logging.getLogger(__name__)

# A candidate replaces fp32 only when it is at least this much faster: a tie within timing noise
# keeps the numerically plain path (the same bar precision=auto uses for inference).
MIN_SPEEDUP = 1.05
# Timed steps per candidate after one untimed warm-up step (which builds oneDNN / cuBLAS kernels).
TIMED_STEPS = 3
# Seconds all candidates' steps may take together, warm-ups included: fewer timed steps (at least
# one) per candidate when a step is slow, so a base-sized model on a small CPU still probes in seconds.
BUDGET_SECONDS = 10.0
# A candidate whose warm-up step alone takes this many times the fastest step so far is not timed
# further: a warm-up does a step's work plus one-time set-up, so its step is slower than that anyway
# (emulated bf16 on a CPU without AVX-512 took 9x fp32's time here).
GIVE_UP_FACTOR = 3.0
# train.precision: the precision training runs in (mixed precision for bf16/fp16), not the scoring
# precision of a trained model (runtime/precision.py).
TRAINING_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
ONLY_CANDIDATE = "the only candidate here: torch has no bf16 path for this CPU"


@dataclass(frozen=True)
class PrecisionChoice:
    """The training precision, the seconds per step measured for each candidate, and why it was chosen."""

    precision: str
    reason: str
    timings: dict[str, float] = field(default_factory=dict)  # candidate -> seconds per forward+backward step

    def describe(self) -> str:
        """One log line: `precision auto: fp32 0.41 s/step, bf16 0.83 s/step -> fp32 (fastest)`."""
        if not self.timings:
            return f"precision {self.precision} ({self.reason})"
        times = ", ".join(f"{name} {seconds:.3g} s/step" for name, seconds in self.timings.items())
        return f"precision auto: {times} -> {self.precision} ({self.reason})"

    def to_meta(self) -> dict:
        return {"precision": self.precision, "precision_timings": {k: round(v, 4) for k, v in self.timings.items()},
                "precision_reason": self.reason}


def training_candidates(device_type: str) -> list[str]:
    """Precisions worth timing on this device, fp32 first.

    fp16 is never a CPU candidate (no fast fp16 CPU kernels, and fp16's range needs a loss scaler).
    bf16 is one on a CPU only where torch has a bf16 path for it; whether it is faster is measured.
    """
    import torch

    if device_type == "cuda":
        return ["fp32", *(["bf16"] if torch.cuda.is_bf16_supported() else []), "fp16"]
    return ["fp32", "bf16"] if cpu_offers_bf16() else ["fp32"]


@contextlib.contextmanager
def _untouched(model) -> Iterator[None]:
    """Leave the model as found: its mode, its gradients, its buffers and the random number generators.

    Probing draws dropout masks and, in training mode, updates BatchNorm's running statistics (the
    mean-pooled head's `pooled_norm`); without restoring both, a training run with `auto` would differ
    from the same run with the chosen precision given explicitly.
    """
    import torch

    was_training = model.training
    grads = [(p, p.grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            for param, grad in grads:
                param.grad = grad
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            model.train(was_training)


def time_training_step(model, batch: dict, precision: str, steps: int, budget_s: float = float("inf"),
                       give_up_s: float = float("inf")) -> float:
    """Seconds per forward+backward step of `model` on `batch` under `precision`'s autocast.

    The fastest of up to `steps` timed steps after one warm-up step (interference from other
    processes on the cores only ever adds time); timing stops early once the warm-up and the timed
    steps have taken `budget_s`, after at least one timed step. A warm-up longer than `give_up_s`
    is returned as is, untimed further: enough to rule the candidate out. No optimizer step: it
    costs the same in every precision (the weights stay fp32), and leaving it out leaves the
    parameters untouched.
    """
    import torch

    device = next(model.parameters()).device
    dtype = getattr(torch, AUTOCAST_DTYPES[precision]) if precision in AUTOCAST_DTYPES else None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model.train()
    best, spent = float("inf"), 0.0
    for step in range(steps + 1):
        model.zero_grad(set_to_none=True)
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs = model(**batch)
        outputs.loss.backward()
        sync()
        seconds = time.perf_counter() - started
        spent += seconds
        if step == 0 and seconds > give_up_s:
            best = seconds
            break
        if step:  # step 0 is the warm-up
            best = min(best, seconds)
            if spent >= budget_s:
                break
    model.zero_grad(set_to_none=True)
    return best


def choose(timings: dict[str, float]) -> tuple[str, str]:
    """The fastest candidate and why; fp32 unless another is MIN_SPEEDUP faster."""
    fastest = min(timings, key=timings.get)
    if fastest == "fp32" or "fp32" not in timings:
        others = [f"{name} {timings['fp32'] / t:.2f}x fp32's speed" for name, t in timings.items()
                  if name != "fp32" and "fp32" in timings]
        return fastest, "fastest" + (f"; {', '.join(others)}" if others else "")
    speedup = timings["fp32"] / timings[fastest]
    if speedup < MIN_SPEEDUP:
        return "fp32", f"{fastest} only {speedup:.2f}x fp32's speed, under the {MIN_SPEEDUP}x bar"
    return fastest, f"fastest: {speedup:.2f}x fp32's speed"


def measure_training_precision(model, batch: dict, candidates: Sequence[str] | None = None,
                               steps: int = TIMED_STEPS, budget_s: float = BUDGET_SECONDS) -> PrecisionChoice:
    """Time forward+backward steps of `model` on `batch` (tensors on the model's device, with labels)
    in each candidate precision and choose the fastest; the model is left as it was found."""
    device = next(model.parameters()).device
    candidates = list(candidates or training_candidates(device.type))
    if len(candidates) == 1:
        return PrecisionChoice(candidates[0], ONLY_CANDIDATE)
    timings: dict[str, float] = {}
    with _untouched(model):
        for name in candidates:
            fastest = min(timings.values(), default=float("inf"))
            timings[name] = time_training_step(model, batch, name, steps, budget_s / len(candidates),
                                               give_up_s=GIVE_UP_FACTOR * fastest)
    precision, reason = choose(timings)
    return PrecisionChoice(precision, reason, timings)


def typical_batch(dataset, batch_size: int) -> list[int]:
    """Indices of `batch_size` training rows around the median length: with length-grouped
    batches most steps see rows of one length, and the median is the most typical one."""
    lengths = [len(ids) for ids in dataset["input_ids"]]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    start = max(0, min(len(order) - batch_size, len(order) // 2 - batch_size // 2))
    return order[start:start + batch_size]


def agreed_across_ranks(choice: PrecisionChoice) -> PrecisionChoice:
    """Under torchrun every rank times its own steps; all of them train in rank 0's choice."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return choice
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    # The same process group TrainingArguments joins a moment later.
    PartialState(cpu=not torch.cuda.is_available())
    shared = [choice]
    broadcast_object_list(shared, from_process=0)
    return shared[0]
