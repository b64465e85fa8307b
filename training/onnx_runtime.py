"""ONNX Runtime as a scoring backend: export the classifier, quantise it, run it like the torch model.

`Classifier.set_precision("onnx")` (fp32) or `"onnx-int8"` (dynamic int8 weights) swaps the
torch module that runs forward passes for an `OrtRunner`; tokenisation, length-sorted
batching, thresholds and the `other` rule stay the same code. The graph comes from
`torch.onnx.export` (optimum has no release for transformers 5) with dynamic batch and
sequence axes, and is written beside the model (`model.onnx`, `model-int8.onnx`) so a
packaged model loads it instead of exporting again.

Needs the `onnx` extra: pip install -e '.[onnx]'.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

log = logging.getLogger(__name__)

ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
INSTALL_HINT = "pip install -e '.[onnx]' (onnx and onnxruntime)"


def available() -> bool:
    """Whether onnxruntime and onnx import here (both are needed: one exports, one runs)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def export(model, tokenizer, path: Path) -> Path:
    """The model's logits as an ONNX graph with inputs input_ids and attention_mask."""
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
        # against torch by tests/test_onnx.py. A copy is traced: tracing the live model left it
        # giving different probabilities afterwards.
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(copy.deepcopy(model).float().eval()), (sample["input_ids"], sample["attention_mask"]),
                          str(tmp), input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes=axes, dynamo=False)
    os.replace(tmp, path)
    log.info("exported %s in %.0f s", path, time.perf_counter() - started)
    return path


def quantize(fp32: Path, path: Path) -> Path:
    """Dynamic int8 quantisation of the graph's weights (activations stay float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(path.name + ".tmp")
    # quantize_dynamic logs a line per tensor at INFO and advice about a pre-processing step at
    # WARNING, all on the root logger: keep them out of our logs while it runs.
    root, tip, level = logging.getLogger(), _DropTip(), logging.getLogger().level
    root.addFilter(tip)
    root.setLevel(logging.WARNING)
    try:
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(tip)
        root.setLevel(level)
    os.replace(tmp, path)
    return path


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def graph_for(precision: str, model, tokenizer, folder: Path | None) -> Path:
    """The ONNX file for `precision`: found in the model folder, else exported there (or to a
    temporary folder when the model has none or it is read-only)."""
    name = ONNX_FILES[precision]
    if folder is not None and (folder / name).is_file():
        return folder / name
    target = folder if folder is not None and os.access(folder, os.W_OK) else Path(tempfile.mkdtemp(prefix="fic-onnx-"))
    fp32 = target / ONNX_FILES["onnx"]
    if not fp32.is_file():
        if folder is not None and (folder / ONNX_FILES["onnx"]).is_file():
            fp32 = folder / ONNX_FILES["onnx"]
        else:
            export(model, tokenizer, fp32)
    return fp32 if precision == "onnx" else quantize(fp32, target / name)


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
