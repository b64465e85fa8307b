from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.chdir(ROOT)  # configs name repository-relative paths, as a user running from the checkout would
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A model small enough to train in seconds on two cores; fp32 so two runs are bit-identical.
TINY = [
    "model.name_or_path=scratch",
    "model.scratch.layers=1",
    "model.scratch.hidden=32",
    "model.scratch.heads=2",
    "model.scratch.intermediate=64",
    "train.epochs=3",
    "train.batch_size=32",
    "train.learning_rate=1e-3",
    "train.precision=fp32",
    "data.max_length=64",
    "data.label_files=[labels/seed_units.jsonl]",
    # As the default model: encoder and TF-IDF averaged, so serving, batch and Ray tests run that path.
    "model.tfidf_fusion=true",
]


def train_tiny(out: Path, *extra: str) -> Path:
    from training.train import main

    args = ["--config", "configs/offline-small.yaml", "--quiet", "--set", f"output_dir={out}"]
    for item in [*TINY, *extra]:
        args += ["--set", item]
    assert main(args) == 0
    return out


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("artifact") / "tiny")


@pytest.fixture(scope="session")
def bento_home(tmp_path_factory) -> Path:
    """A BentoML store of its own, shared by the serving tests."""
    return tmp_path_factory.mktemp("bentoml")


@pytest.fixture(scope="session")
def model_tag(tiny_artifact, bento_home) -> str:
    from tests.live import package_model

    return package_model(tiny_artifact, bento_home)
