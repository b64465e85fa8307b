"""ONNX Runtime as a scoring precision: same probabilities as torch, graph kept with the model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("onnxruntime", reason="ONNX Runtime is the onnx extra (in the test extra)")

TEXTS = ["推动人形机器人产业发展。", "发展氢能和新型储能，建设新型电力系统。", "版权所有", "量子计算"] * 5


@pytest.fixture()
def model(tiny_artifact, tmp_path) -> Path:
    from runtime.precision import PRECISION_FILE

    copy = tmp_path / "model"
    shutil.copytree(tiny_artifact, copy, ignore=shutil.ignore_patterns(PRECISION_FILE, "*.onnx", "checkpoints"))
    return copy


def test_onnx_precisions_score_like_torch_and_keep_their_graph(model) -> None:
    from runtime.classifier import Classifier

    reference = Classifier.from_artifact(model, precision="fp32")
    before = reference.probabilities(TEXTS)
    ort = Classifier.from_artifact(model, precision="onnx")
    assert (model / "model.onnx").is_file() and ort.precision == "onnx"
    assert np.abs(ort.probabilities(TEXTS) - before).max() < 1e-4
    assert [p.labels for p in ort.predict(TEXTS)] == [p.labels for p in reference.predict(TEXTS)]
    # A classifier loaded for ONNX Runtime holds no second copy of the weights in torch ...
    assert all(param.device.type == "meta" for param in ort.model.parameters()) and ort.device.type == "cpu"
    with pytest.raises(ValueError, match="load the artifact again"):
        ort.set_precision("fp32")
    # ... while one switched to onnx by hand keeps them, and exporting traced a copy: the torch model it came
    # from still scores as before.
    reference.set_precision("onnx")
    assert np.abs(reference.probabilities(TEXTS) - before).max() < 1e-4
    reference.set_precision("fp32")
    assert np.array_equal(reference.probabilities(TEXTS), before)

    mtime = (model / "model.onnx").stat().st_mtime_ns
    int8 = Classifier.from_artifact(model, precision="onnx-int8")
    probs = int8.probabilities(TEXTS)
    assert (model / "model-int8.onnx").is_file() and probs.shape == before.shape and np.isfinite(probs).all()
    assert (model / "model.onnx").stat().st_mtime_ns == mtime  # the stored graph is reused, not exported again


def test_package_stores_only_the_chosen_graph_and_the_batch_scorer_runs_it(model, tmp_path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    (model / "model-int8.onnx").write_bytes(b"left from an earlier auto timing")
    result = subprocess.run([sys.executable, "-m", "serving.package", str(model), "--name", "fic-onnx",
                             "--precision", "onnx"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    stored = next((tmp_path / "bentoml" / "models" / "fic-onnx").glob("*/"))
    assert json.loads((stored / "precision.json").read_text())["precision"] == "onnx"
    assert (stored / "model.onnx").is_file() and not (stored / "model-int8.onnx").exists()

    out = tmp_path / "scored" / "units.jsonl"
    result = subprocess.run([sys.executable, "-m", "serving.batch", "seeds", "-o", str(out), "--model", str(stored),
                             "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(out.with_name("units.run.json").read_text())["precision"] == "onnx"
    assert "units written 238" in result.stderr
