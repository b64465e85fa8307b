"""Scoring precision, one concept: the choices, which a device offers, `auto`'s measurement, and the
record that binds a decision to the weights it was made for.

A model's precision is decided once — by `python -m serving.package`, or by the first load that
asks for `auto` — and written to `precision.json` in its folder with the fingerprint of its weights
(runtime/fingerprint.py). Every later load (the service, the batch scorer, Ray actors) reads that
record, so the same model gives the same scores everywhere; a record made for other weights (a
retrain into the same folder) is ignored. Training's own mixed precision is a different setting,
`train.precision` (training/precision_probe.py).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

from runtime.decide import decide, label_matrix
from runtime.fingerprint import weights_fingerprint

if TYPE_CHECKING:
    import numpy as np

    from runtime.classifier import Classifier

log = logging.getLogger(__name__)

# The concrete precisions. onnx / onnx-int8: ONNX Runtime on the exported graph, fp32 or int8 weights
# (runtime/onnx_runtime.py); int8: torch dynamic quantization of the Linear layers (int8_layer below
# says which); bf16/fp16: autocast.
Precision = Literal["fp32", "bf16", "fp16", "int8", "onnx", "onnx-int8"]
PRECISIONS: tuple[str, ...] = Precision.__args__
AUTO = "auto"
CHOICES: tuple[str, ...] = (*PRECISIONS, AUTO)  # what a user may ask for
ONNX_PRECISIONS = ("onnx", "onnx-int8")
# auto accepts a faster variant only if it gives the same label set as fp32 on at least this share of
# the calibration units ...
AUTO_MIN_AGREEMENT = 0.99
# ... and only if it is at least this much faster than the best so far: a variant that merely
# ties fp32 on the calibration units (timing noise) is not worth a second copy of the model.
AUTO_MIN_SPEEDUP = 1.05
# Fewer calibration units than this: auto keeps fp32 (agreement on a handful says nothing).
AUTO_MIN_UNITS = 20
PRECISION_FILE = "precision.json"
# The field of precision.json naming the weights the choice was made for: a choice timed and checked
# for agreement on other weights says nothing about these.
WEIGHTS_FIELD = "weights_fingerprint"


def check(precision: str) -> str:
    """`precision` if it is one of CHOICES, else a ValueError naming them."""
    if precision not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, got {precision!r}")
    return precision


# Names the int8 layer choice: stamped into quantised ONNX graphs, so one made by another rule is made again.
INT8_RECIPE = "int8-ffn-out-first-two-thirds-fp32"


def int8_layer(name: str, blocks: int) -> bool:
    """Whether the `int8` precision quantises Linear layer `name` of a BERT encoder with `blocks` blocks: every
    one but the feed-forward output projection of the first two thirds of the blocks. That projection reads
    the GELU's output, whose outliers a per-tensor activation scale serves badly; on the e5 default
    quantising it alone changed 2.1% of label sets (all else int8 and it fp32: 0.5%), and keeping it in fp32
    in blocks 0-7 (8 of 73 layers) took int8's label agreement with fp32 from 0.978 to 0.997 on 1,000 real
    units (python -m bench.int8_layers; docs/performance.md). The onnx-int8 graph keeps the same layers
    in float."""
    parts = name.split(".")
    if "layer" not in parts or not name.endswith("output.dense") or ".attention." in name:
        return True
    return int(parts[parts.index("layer") + 1]) >= (2 * blocks) // 3


def offered(device_type: str) -> list[str]:
    """Concrete precisions a device can run, fp32 first."""
    import torch

    if device_type == "cuda":
        return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    from runtime import onnx_runtime
    from runtime.threads import cpu_offers_bf16

    # bf16 only as a candidate for `auto` to time: on some CPUs with AVX-512 BF16 it is slower than fp32.
    options = ["fp32", "bf16", "int8"] if cpu_offers_bf16() else ["fp32", "int8"]
    return options + (list(ONNX_PRECISIONS) if onnx_runtime.available() else [])


def recorded_precision(path: str | Path, fingerprint: str | None = None) -> dict | None:
    """The precision recorded in a model folder ({"precision": ..., ...}), or None: none recorded, or
    recorded for other weights than `fingerprint` (default: those in the folder)."""
    file = Path(path) / PRECISION_FILE
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if not (isinstance(record, dict) and record.get("precision") in PRECISIONS):
        return None
    try:
        expected = fingerprint or weights_fingerprint(path)
    except FileNotFoundError:  # no weights beside it: nothing the record could be about
        return None
    if record.get(WEIGHTS_FIELD) != expected:
        log.info("%s was decided for %s, not the weights beside it (e.g. before a retrain into the same folder); "
                 "ignoring it", file, "other weights" if record.get(WEIGHTS_FIELD) else "unnamed weights")
        return None
    return record


def record_precision(path: str | Path, record: dict, fingerprint: str | None = None) -> bool:
    """Write the decided precision into a model folder, bound to the weights `fingerprint` names
    (default: those in the folder); False if the folder is not writable."""
    file = Path(path) / PRECISION_FILE
    record = {**record, WEIGHTS_FIELD: fingerprint or weights_fingerprint(path)}
    try:
        tmp = file.with_name(file.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        tmp.replace(file)
    except OSError as exc:
        log.warning("could not record the precision in %s (%s)", file, exc)
        return False
    return True


def time_scoring(classifier: "Classifier", option: str, encoded: list[list[int]]) -> tuple[float, "np.ndarray"]:
    """Seconds to score `encoded` in precision `option` (after a warm-up batch), and the encoder's probabilities."""
    classifier.set_precision(option)
    classifier.encoder_probabilities(encoded[: classifier.batch_size])  # warm-up
    started = time.perf_counter()
    probs = classifier.encoder_probabilities(encoded)
    return time.perf_counter() - started, probs


def measure(classifier: "Classifier", calibration: Sequence[str] | None) -> dict:
    """`auto`: time every precision the classifier's device offers on the calibration units and choose
    the fastest whose label sets agree with fp32 on >= AUTO_MIN_AGREEMENT of them and that beats the
    best so far by AUTO_MIN_SPEEDUP. Returns the record ({"precision", "decided_by", "device",
    "options": {precision: {units_per_s, agreement_with_fp32}}}); the classifier is left in the
    precision timed last."""
    texts = list(calibration or [])
    report: dict = {"precision": "fp32", "decided_by": "auto", "device": classifier.device.type, "options": {}}
    if len(texts) < AUTO_MIN_UNITS:
        log.info("precision=auto: no calibration units, using fp32")
        report["note"] = "no calibration units"
        return report
    encoded, _ = classifier.encode(texts)
    results = {}
    for option in offered(classifier.device.type):
        seconds, probs = time_scoring(classifier, option, encoded)
        results[option] = (seconds, classifier.fuse(probs, texts))
    c = classifier
    reference = label_matrix(decide(results["fp32"][1], c.directions, c.thresholds, c.other), c.directions)
    best = "fp32"
    for option, (seconds, probs) in results.items():
        labels = label_matrix(decide(probs, c.directions, c.thresholds, c.other), c.directions)
        agreement = float((labels == reference).all(axis=1).mean())
        log.info("precision=auto: %s %.0f units/s, label-set agreement with fp32 %.3f",
                 option, len(texts) / seconds, agreement)
        report["options"][option] = {"units_per_s": round(len(texts) / seconds, 1),
                                     "agreement_with_fp32": round(agreement, 4)}
        if agreement >= AUTO_MIN_AGREEMENT and seconds * AUTO_MIN_SPEEDUP < results[best][0]:
            best = option
    log.info("precision=auto chose %s", best)
    report["precision"] = best
    return report


def resolve(path: Path, requested: str | None, fingerprint: str | None = None,
            can_run: Sequence[str] | None = None) -> tuple[str, str]:
    """What a load of the model in `path` should do: (precision or "auto", where that came from).

    An explicit precision is obeyed ("argument"). None or "auto": the precision recorded for these
    weights ("recorded"; fp32 with a warning if the device cannot run it, "fallback"); with none
    recorded, None means fp32 ("default") and "auto" means measure now ("auto").
    """
    if requested not in (None, AUTO):
        return check(requested), "argument"
    record = recorded_precision(path, fingerprint)
    if record and (can_run is None or record["precision"] in can_run):
        return record["precision"], "recorded"
    if record:
        log.warning("%s records precision %s, which this device cannot run; using fp32",
                    Path(path) / PRECISION_FILE, record["precision"])
        return "fp32", "fallback"
    return ("fp32", "default") if requested is None else (AUTO, AUTO)
