"""Files derived from the weights (ONNX graphs, precision.json) are bound to them: a retrain into the
same folder, or weights replaced behind the loader's back, never runs the old graph."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import train_tiny

pytest.importorskip("onnxruntime", reason="ONNX Runtime is the onnx extra (in the test extra)")

TEXTS = [
    "推动人形机器人产业发展。", "发展氢能和新型储能，建设新型电力系统。", "版权所有", "量子计算", "培育商业航天。",
] * 4


def copy_without_derived(source: Path, target: Path) -> Path:
    from runtime.fingerprint import derived_files

    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*derived_files(), "checkpoints"))
    return target


def test_graph_fingerprint_reads_what_onnx_writes(tmp_path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from runtime.onnx_runtime import FINGERPRINT_KEY, graph_fingerprint

    weights = helper.make_tensor("w", TensorProto.FLOAT, [64, 64], np.ones(64 * 64, dtype=np.float32))
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [weights])
    model = helper.make_model(graph)
    model.metadata_props.add(key="other", value="x" * 300)  # a longer entry first: lengths over one varint byte
    model.metadata_props.add(key=FINGERPRINT_KEY, value="sha256:abc")
    stamped = tmp_path / "stamped.onnx"
    onnx.save(model, str(stamped))
    assert {p.key: p.value for p in onnx.load(str(stamped)).metadata_props}[FINGERPRINT_KEY] == "sha256:abc"
    assert graph_fingerprint(stamped) == "sha256:abc"

    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "plain.onnx"))
    assert graph_fingerprint(tmp_path / "plain.onnx") is None
    (tmp_path / "junk.onnx").write_bytes(b"left from an earlier auto timing")
    assert graph_fingerprint(tmp_path / "junk.onnx") is None
    (tmp_path / "cut.onnx").write_bytes(stamped.read_bytes()[:-5])  # a copy cut short
    assert graph_fingerprint(tmp_path / "cut.onnx") is None


@pytest.mark.slow
def test_weights_replaced_in_the_folder_are_scored_not_the_old_graph(tiny_artifact, tmp_path) -> None:
    # As the issue reproduced it: export a graph, change the weights as training does, score again.
    import torch
    from transformers import AutoModelForSequenceClassification

    import runtime.modeling  # noqa: F401  registers the pooled classifier with the Auto classes
    from runtime.classifier import Classifier
    from runtime.fingerprint import weights_fingerprint
    from runtime.onnx_runtime import graph_fingerprint, stamp_for
    from runtime.precision import record_precision, recorded_precision

    model = copy_without_derived(tiny_artifact, tmp_path / "model")
    old = Classifier.from_artifact(model, precision="onnx")
    old_probs = old.probabilities(TEXTS)
    assert graph_fingerprint(model / "model.onnx") == weights_fingerprint(model)
    assert record_precision(model, {"precision": "onnx", "decided_by": "test"})
    assert recorded_precision(model)["precision"] == "onnx"

    encoder = AutoModelForSequenceClassification.from_pretrained(model)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for parameter in encoder.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
    encoder.save_pretrained(model)

    assert recorded_precision(model) is None  # timed on the old weights: decided again, not trusted
    new = Classifier.from_artifact(model, precision="onnx")
    reference = Classifier.from_artifact(model, precision="fp32").probabilities(TEXTS)
    assert np.abs(reference - old_probs).max() > 0.01  # the change is visible in the scores
    assert np.abs(new.probabilities(TEXTS) - reference).max() < 1e-4
    assert graph_fingerprint(model / "model.onnx") == weights_fingerprint(model)

    int8 = Classifier.from_artifact(model, precision="onnx-int8")
    assert graph_fingerprint(model / "model-int8.onnx") == stamp_for("onnx-int8", weights_fingerprint(model))
    labels = [p.labels for p in int8.predict(TEXTS)]
    assert np.abs(int8.probabilities(TEXTS) - reference).max() < 0.1 and len(labels) == len(TEXTS)


@pytest.mark.slow
def test_a_retrain_into_a_folder_with_derived_graphs_serves_the_new_weights(tiny_artifact, tmp_path) -> None:
    from runtime.classifier import Classifier
    from runtime.fingerprint import weights_fingerprint
    from runtime.onnx_runtime import graph_fingerprint
    from runtime.precision import record_precision

    art = copy_without_derived(tiny_artifact, tmp_path / "art")
    Classifier.from_artifact(art, precision="onnx-int8")  # exports model.onnx and model-int8.onnx into art
    assert record_precision(art, {"precision": "onnx", "decided_by": "python -m serving.package"})
    old_vocab = json.loads((art / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]

    train_tiny(art, "seed=7")  # the same output_dir; another seed draws another character vocabulary
    new_vocab = json.loads((art / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    assert new_vocab != old_vocab  # the old graph would meet ids it was not built for
    assert not [p.name for p in art.iterdir() if p.suffix == ".onnx" or p.name == "precision.json"]

    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    out = tmp_path / "scored" / "units.jsonl"
    result = subprocess.run([sys.executable, "-m", "serving.batch", "seeds", "-o", str(out), "--model", str(art),
                             "--precision", "onnx", "--no-progress"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    units = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    reference = Classifier.from_artifact(art, precision="fp32").predict([u["text"] for u in units], already_clean=True)
    assert len(units) == 238
    assert max(abs(u["scores"][label] - p.scores[label]) for u, p in zip(units, reference) for label in p.scores) < 1e-4
    assert [u["labels"] for u in units] == [p.labels for p in reference]
    assert graph_fingerprint(art / "model.onnx") == weights_fingerprint(art)

    result = subprocess.run([sys.executable, "-m", "serving.package", str(art), "--name", "fic-retrained",
                             "--precision", "onnx"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    stored = next((tmp_path / "bentoml" / "models" / "fic-retrained").glob("*/"))
    assert graph_fingerprint(stored / "model.onnx") == weights_fingerprint(stored) == weights_fingerprint(art)
    assert json.loads((stored / "precision.json").read_text())["weights_fingerprint"] == weights_fingerprint(art)
