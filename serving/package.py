"""Save a training artifact folder into the BentoML model store.

    python -m serving.package artifacts/offline-small
    python -m serving.package artifacts/bert-base-chinese --name future-industry-classifier

The model keeps its labels, thresholds, preprocessing version and headline
metrics as BentoML metadata, so `bentoml models get TAG` tells what it is
without loading it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from training.predict import ArtifactError, read_artifact_meta

DEFAULT_NAME = "future-industry-classifier"


def package(artifact_dir: str | Path, name: str = DEFAULT_NAME) -> str:
    """Copy the artifact into a new BentoML model version; returns the tag."""
    import bentoml

    source = Path(artifact_dir)
    meta = read_artifact_meta(source)
    metadata = {
        "labels": meta["labels"],
        "directions": meta["directions"],
        "other": meta["other"],
        "thresholds": dict(zip(meta["directions"], meta["thresholds"])),
        "preprocessing_version": meta["preprocessing_version"],
        "max_length": meta["max_length"],
        "base_model": meta["base_model"],
        "from_scratch": meta["from_scratch"],
        "metrics": meta["metrics"],
        "trained": meta["created"],
        "run_name": meta["name"],
    }
    with bentoml.models.create(
        name,
        labels={"task": "multi-label-text-classification", "language": "zh"},
        metadata=metadata,
    ) as model_ref:
        for item in source.iterdir():
            # Checkpoint folders left by an interrupted run are not part of the model.
            if item.is_file():
                shutil.copy2(item, Path(model_ref.path) / item.name)
    return str(model_ref.tag)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.package",
        description="Save a training artifact (model, tokenizer, labels, thresholds, metrics) into the local "
                    "BentoML model store and print its tag.",
    )
    parser.add_argument("artifact_dir", help="output folder of python -m training.train, e.g. artifacts/offline-small")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"model name in the store (default {DEFAULT_NAME})")
    args = parser.parse_args(argv)
    try:
        tag = package(args.artifact_dir, args.name)
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
