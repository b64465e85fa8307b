"""ONNX Runtime as a scoring backend: export the classifier, quantise it, run it like the torch model.

`Classifier.set_precision("onnx")` (fp32) or `"onnx-int8"` (dynamic int8 weights) swaps the
torch module that runs forward passes for an `OrtRunner`; tokenisation, length-sorted
batching, thresholds and the `other` rule stay the same code. The graph comes from
`torch.onnx.export` (optimum has no release for transformers 5) with dynamic batch and
sequence axes, and is written beside the model (`model.onnx`, `model-int8.onnx`) so a
packaged model loads it instead of exporting again. Each graph records in its metadata the
fingerprint of the weights it was made from (runtime/fingerprint.py); a graph that names
other weights (a retrain into the same folder) is made again rather than run.

Needs the `onnx` extra: pip install -e '.[onnx]'.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import BinaryIO

import numpy as np

log = logging.getLogger(__name__)

ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
INSTALL_HINT = "pip install -e '.[onnx]' (onnx and onnxruntime)"
# The metadata_props entry naming the weights a graph was made from (runtime.fingerprint).
FINGERPRINT_KEY = "fic.weights_fingerprint"
_METADATA_PROPS = 14  # field number of ModelProto.metadata_props in onnx.proto


def available() -> bool:
    """Whether onnxruntime and onnx import here (both are needed: one exports, one runs)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def export(model, tokenizer, path: Path, fingerprint: str | None) -> Path:
    """The model's logits as an ONNX graph with inputs input_ids and attention_mask, recording
    `fingerprint` (the weights the model was loaded from; None: unknown) in its metadata."""
    import warnings

    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    sample = tokenizer(["样例文本", "另一个稍长一些的样例文本"], padding=True, return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"}}
    tmp = path.with_name(path.name + ".tmp")
    started = time.perf_counter()
    with torch.inference_mode(), warnings.catch_warnings():
        # The TorchScript exporter warns about tracing and its own deprecation; its graph is checked
        # against torch by tests/runtime/test_onnx_runtime.py. A copy is traced: tracing the live model left it
        # giving different probabilities afterwards.
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(copy.deepcopy(model).float().eval()), (sample["input_ids"], sample["attention_mask"]),
                          str(tmp), input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes=axes, dynamo=False)
    _stamp(tmp, fingerprint)
    os.replace(tmp, path)
    log.info("exported %s in %.0f s", path, time.perf_counter() - started)
    return path


def quantize(fp32: Path, path: Path, fingerprint: str | None) -> Path:
    """Dynamic int8 quantisation of the graph's weights (activations stay float), recording
    `fingerprint` (the weights `fp32` was made from) in its metadata."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(path.name + ".tmp")
    # quantize_dynamic logs a line per tensor at INFO and advice about a pre-processing step at
    # WARNING, all on the root logger: keep them out of our logs while it runs.
    root, tip, level = logging.getLogger(), _DropTip(), logging.getLogger().level
    root.addFilter(tip)
    root.setLevel(logging.WARNING)
    try:
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, nodes_to_exclude=float_nodes(fp32))
    finally:
        root.removeFilter(tip)
        root.setLevel(level)
    _stamp(tmp, fingerprint)
    os.replace(tmp, path)
    return path


def float_nodes(path: Path) -> list[str]:
    """The MatMul/Gemm nodes of an exported graph that the int8 precision keeps in float: those of the Linear
    layers `precision.int8_layer` leaves out (node names follow the module path, /…/layer.N/output/dense/MatMul)."""
    import re

    import onnx

    from runtime.precision import int8_layer

    nodes = [node.name for node in onnx.load(str(path), load_external_data=False).graph.node
             if node.op_type in ("MatMul", "Gemm")]
    blocks = 1 + max((int(m.group(1)) for n in nodes if (m := re.search(r"/layer\.(\d+)/", n))), default=-1)
    return [name for name in nodes if not int8_layer(name.rsplit("/", 1)[0].strip("/").replace("/", "."), blocks)]


def stamp_for(precision: str, fingerprint: str | None) -> str | None:
    """What the graph of `precision` made from the weights `fingerprint` records: the weights, and for
    onnx-int8 also the int8 layer choice it was quantised with."""
    from runtime.precision import INT8_RECIPE

    return fingerprint if precision == "onnx" or fingerprint is None else f"{fingerprint}+{INT8_RECIPE}"


def _stamp(path: Path, fingerprint: str | None) -> None:
    import onnx

    graph = onnx.load(str(path))
    kept = [entry for entry in graph.metadata_props if entry.key != FINGERPRINT_KEY]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    if fingerprint is not None:
        graph.metadata_props.add(key=FINGERPRINT_KEY, value=fingerprint)
    onnx.save(graph, str(path))


def _varint(stream: BinaryIO) -> int:
    value = 0
    for shift in range(0, 70, 7):
        byte = stream.read(1)
        if not byte:
            raise ValueError("truncated varint")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    raise ValueError("varint longer than 10 bytes")


def _length_delimited(stream: BinaryIO, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, offset, length) of each length-delimited field of one protobuf message, skipping the bytes."""
    while stream.tell() < end:
        key = _varint(stream)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _varint(stream)
        elif wire in (1, 5):
            stream.seek(8 if wire == 1 else 4, io.SEEK_CUR)
        elif wire == 2:
            length = _varint(stream)
            start = stream.tell()
            stream.seek(length, io.SEEK_CUR)
            yield field, start, length
        else:
            raise ValueError(f"protobuf wire type {wire} at the top level of an ONNX model")


def graph_fingerprint(path: Path) -> str | None:
    """The weights fingerprint recorded in an ONNX file, or None (none recorded, or not an ONNX model).

    Reads the top level of the protobuf only and seeks past the graph: checking a graph that is
    about to be loaded costs microseconds, not a second parse of its hundreds of MB.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            for field, start, length in _length_delimited(handle, size):
                if field != _METADATA_PROPS or start + length > size:
                    continue
                resume = handle.tell()
                handle.seek(start)
                entry = handle.read(length)
                handle.seek(resume)
                parts = {number: entry[at:at + n] for number, at, n in _length_delimited(io.BytesIO(entry), length)}
                if parts.get(1) == FINGERPRINT_KEY.encode():
                    return parts.get(2, b"").decode("utf-8")
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return None


def is_current(path: Path, fingerprint: str | None) -> bool:
    """Whether `path` is a graph made from the weights `fingerprint` names; logs why not when it exists."""
    if not path.is_file():
        return False
    found = graph_fingerprint(path)
    if fingerprint is not None and found == fingerprint:
        return True
    if fingerprint is None:
        log.info("%s: the model was not loaded from an artifact folder, so the graph cannot be matched to its "
                 "weights; exporting it again", path)
    elif found is None:
        log.info("%s records no weights fingerprint (made by an older version, or damaged); exporting it again", path)
    elif found.split("+")[0] == fingerprint.split("+")[0]:
        log.info("%s was quantised with another choice of int8 layers (%s; now %s); making it again", path,
                 found.partition("+")[2] or "every Linear layer", fingerprint.partition("+")[2] or "every Linear layer")
    else:
        log.info("%s was made from other weights (%s; these are %s), e.g. before a retrain into the same folder; "
                 "exporting it again", path, found[:19], fingerprint[:19])
    return False


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def graph_for(precision: str, model, tokenizer, folder: Path | None, fingerprint: str | None) -> Path:
    """The ONNX file for `precision` made from the weights `fingerprint` names: found in the model
    folder when its metadata names them, else exported (and quantised) there, or to a temporary
    folder when the model has none or it is read-only. A graph of other weights is never run."""
    name = ONNX_FILES[precision]
    wanted = stamp_for(precision, fingerprint)
    if folder is not None and is_current(folder / name, wanted):
        return folder / name
    target = folder if folder is not None and os.access(folder, os.W_OK) else Path(tempfile.mkdtemp(prefix="fic-onnx-"))
    fp32 = folder / ONNX_FILES["onnx"] if folder is not None else None
    export_fp32 = precision == "onnx" or fp32 is None or not is_current(fp32, fingerprint)
    # Said before writing: the graphs grow the user's folder by about the weights' size, int8 by a quarter of it.
    names = ([ONNX_FILES["onnx"]] if export_fp32 else []) + ([ONNX_FILES[precision]] if precision != "onnx" else [])
    weights = sum(p.stat().st_size for p in folder.glob("model*.safetensors")) if folder is not None else 0
    size = weights * (export_fp32 + 0.25 * (precision != "onnx"))
    log.info("precision %s: writing %s into %s (about %.0f MB; derived from the weights, safe to delete, made again "
             "when needed)", precision, " and ".join(names), target, size / 2**20)
    if export_fp32:
        fp32 = export(model, tokenizer, target / ONNX_FILES["onnx"], fingerprint)
    return fp32 if precision == "onnx" else quantize(fp32, target / name, wanted)


class OrtRunner:
    """Called like the torch model on a padded batch; returns an object with `.logits` (a tensor)."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads is None:
            import torch

            threads = torch.get_num_threads()  # the thread count configure_threads() chose for torch
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.path = path
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids, attention_mask, **_unused):
        import torch

        logits = self.session.run(["logits"], {"input_ids": input_ids.cpu().numpy().astype(np.int64),
                                               "attention_mask": attention_mask.cpu().numpy().astype(np.int64)})[0]
        return SimpleNamespace(logits=torch.from_numpy(logits))
