"""Data-parallel training: `torchrun --nproc_per_node 2 -m training.train` on CPU (accelerate picks gloo there)."""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TINY

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_torchrun_two_ranks_train_on_halves_and_rank_0_writes_the_artifact(tmp_path) -> None:
    out = tmp_path / "tiny-ddp"
    command = ["torchrun", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "training.train", "--config", "configs/offline-small.yaml", "--set", f"output_dir={out}"]
    for item in TINY:
        command += ["--set", item]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]

    # Each rank was fed its own shard: about half the training units per epoch, together all of them.
    train_units = int(re.search(r"train: (\d+) units", log).group(1))
    seen = {int(rank): (int(samples), float(epochs)) for rank, samples, epochs in
            re.findall(r"rank (\d) of 2: (\d+) training samples in ([\d.]+) epochs", log)}
    assert set(seen) == {0, 1}, log[-4000:]
    batch = int(next(item.split("=")[1] for item in TINY if item.startswith("train.batch_size=")))
    for samples, epochs in seen.values():
        per_epoch = samples / epochs
        assert math.ceil(train_units / 2) <= per_epoch <= math.ceil(train_units / 2) + batch
    assert sum(samples / epochs for samples, epochs in seen.values()) >= train_units

    # One artifact, written once (by rank 0), complete and loadable.
    assert log.count("artifact written to") == 1
    assert json.loads((out / "artifact.json").read_text())["labels"]
    from runtime.classifier import Classifier

    assert Classifier.from_artifact(out, precision="fp32").predict(["发展氢能产业。"])[0].labels
    assert not (out / "checkpoints").exists()
    assert not Path(f"{out}-rank1").exists()
