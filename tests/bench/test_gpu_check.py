"""The GPU check must be safe to run anywhere: with no CUDA GPU it says so, exits 0 and writes nothing."""

from __future__ import annotations

import pytest


def test_the_gpu_check_skips_cleanly_without_a_gpu(tmp_path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the check would run for real")
    from bench.gpu_check import main

    assert main(["--out-dir", str(tmp_path)]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_the_inference_step_times_every_precision_the_device_offers(tiny_artifact, tmp_path) -> None:
    import shutil

    from bench.gpu_check import inference
    from runtime.precision import offered

    artifact = shutil.copytree(tiny_artifact, tmp_path / "tiny")  # the onnx options write graphs beside it
    rows = inference(artifact, units=40, repeats=2, device="cpu")  # the same code the GPU runs
    assert list(rows) == offered("cpu")
    assert rows["fp32"]["agreement_with_fp32"] == 1.0 and rows["fp32"]["speedup_vs_fp32"] == 1.0
    for row in rows.values():
        assert row["units_per_s"] > 0 and len(row["seconds"]) == 2 and 0.0 <= row["agreement_with_fp32"] <= 1.0
