"""The ONNX Runtime yardstick of bench.inference scores what our Classifier scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_onnx_export_matches_torch_and_leaves_the_model_alone(tiny_artifact, tmp_path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is in the bench extra")
    from bench.inference import make_variants
    from training.predict import Classifier

    clf = Classifier.from_artifact(tiny_artifact, precision="fp32")
    texts = ["推动人形机器人产业发展。", "发展氢能和新型储能，建设新型电力系统。", "版权所有", "量子计算"] * 5
    before = clf.probabilities(texts)
    variants = {v.key: v for v in make_variants(["f", "g"], clf, Path(tmp_path), threads=1, pipeline_batch=8)}
    assert all(v.skipped is None for v in variants.values()), [v.skipped for v in variants.values()]
    assert np.abs(variants["f"].run(texts) - before).max() < 1e-4
    int8 = variants["g"].run(texts)
    assert int8.shape == before.shape and np.isfinite(int8).all()
    # Exporting traces a copy; the live model still gives the same probabilities.
    assert np.array_equal(clf.probabilities(texts), before)
