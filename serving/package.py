"""Save a training artifact folder into the BentoML model store.

    python -m serving.package artifacts/offline-small
    python -m serving.package artifacts/bert-base-chinese --name future-industry-classifier

The model keeps its labels, thresholds, preprocessing version, headline
metrics and scoring precision as BentoML metadata, so `bentoml models get TAG`
tells what it is without loading it.

Precision is decided here, once: `--precision auto` (default) keeps a choice already
recorded in the artifact (precision.json), else times fp32/bf16/int8 (and ONNX Runtime's
onnx/onnx-int8 when the onnx extra is installed) on the artifact's calibration units and
keeps the fastest that agrees with fp32 on >= 99% of label sets. An ONNX choice stores its
graph (model.onnx or model-int8.onnx) with the model, so the service never exports at start;
a graph or a recorded choice made from other weights (before a retrain into the same folder)
is made again, never copied.
The choice is written to the stored model's precision.json, which the service and the
batch scorer read at every load (unless told otherwise), so restarts and resumes score
with the same precision.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from runtime import onnx_runtime
from runtime.artifact import calibration_units, read_artifact_meta
from runtime.classifier import Classifier
from runtime.errors import ArtifactError
from runtime.fingerprint import derived_files, weights_fingerprint
from runtime.logs import setup_logging
from runtime.onnx_runtime import ONNX_FILES
from runtime.precision import AUTO, CHOICES, PRECISION_FILE, measure, record_precision, recorded_precision

DEFAULT_NAME = "future-industry-classifier"


def decide_precision(source: Path, precision: str = AUTO) -> dict:
    """The precision record for a model: the requested one, the one already recorded, or one measured now."""
    if precision != AUTO:
        return {"precision": precision, "decided_by": "python -m serving.package --precision"}
    return recorded_precision(source) or measure(Classifier.from_artifact(source, precision="fp32"),
                                                 calibration_units(source))


def package(artifact_dir: str | Path, name: str = DEFAULT_NAME, precision: str = "auto") -> str:
    """Copy the artifact into a new BentoML model version, with its precision decided; returns the tag."""
    import bentoml

    source = Path(artifact_dir)
    meta = read_artifact_meta(source)
    decided = decide_precision(source, precision)
    if decided["precision"] in ONNX_FILES and not onnx_runtime.available():
        raise ArtifactError(f"--precision {decided['precision']} needs ONNX Runtime here and where the model is "
                            f"served: {onnx_runtime.INSTALL_HINT}")
    graph = None
    if decided["precision"] in ONNX_FILES:
        graph = source / ONNX_FILES[decided["precision"]]
        stamp = onnx_runtime.stamp_for(decided["precision"], weights_fingerprint(source))
        if not onnx_runtime.is_current(graph, stamp):
            # Missing, or made from other weights: export it (into the artifact when it is writable).
            classifier = Classifier.from_artifact(source, precision="fp32")
            graph = onnx_runtime.graph_for(decided["precision"], classifier.model, classifier.tokenizer, source,
                                           classifier.weights_fingerprint)
    metadata = {
        "labels": meta["labels"],
        "directions": meta["directions"],
        "other": meta["other"],
        "thresholds": dict(zip(meta["directions"], meta["thresholds"])),
        "preprocessing_version": meta["preprocessing_version"],
        "max_length": meta["max_length"],
        "base_model": meta["base_model"],
        "from_scratch": meta["from_scratch"],
        "tfidf_fusion": bool(meta.get("tfidf_fusion")),
        "metrics": meta["metrics"],
        "trained": meta["created"],
        "run_name": meta["name"],
        "precision": decided["precision"],
    }
    with bentoml.models.create(
        name,
        labels={"task": "multi-label-text-classification", "language": "zh"},
        metadata=metadata,
    ) as model_ref:
        for item in source.iterdir():
            # Checkpoint folders left by an interrupted run are not part of the model; files derived
            # from the weights are written below for this model only: the chosen graph, checked to
            # be of these weights (auto times them all), and the precision record.
            if item.is_file() and item.name not in derived_files():
                shutil.copy2(item, Path(model_ref.path) / item.name)
        if graph is not None:
            shutil.copy2(graph, Path(model_ref.path) / graph.name)
        if not record_precision(model_ref.path, decided):
            raise ArtifactError(f"could not write {PRECISION_FILE} into the model store at {model_ref.path}")
    return str(model_ref.tag)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.package",
        description="Save a training artifact (model, tokenizer, labels, thresholds, metrics) into the local "
                    "BentoML model store and print its tag.",
    )
    parser.add_argument("artifact_dir", help="output folder of python -m training.train, e.g. artifacts/offline-small")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"model name in the store (default {DEFAULT_NAME})")
    parser.add_argument("--precision", default=AUTO, choices=CHOICES,
                        help="scoring precision recorded with the model: auto (default) keeps the artifact's recorded "
                             "choice or decides it now by timing; fp32 is exact")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        tag = package(args.artifact_dir, args.name, args.precision)
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a precision this machine cannot run, e.g. onnx without ONNX Runtime
        print(f"error: --precision {args.precision}: {exc}", file=sys.stderr)
        return 2
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
