"""The artifact folder written by `python -m training.train`: its files, its checks, its loader.

A folder holds the model and tokenizer (Hugging Face format), `artifact.json` (labels,
thresholds, preprocessing version, metrics), the TF-IDF half when the model fuses one,
and `calibration.txt` (held-out cleaned units that `precision=auto` times on). The same
folder, copied into the BentoML store by `python -m serving.package`, is what the service loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import ArtifactError
from runtime.fingerprint import weights_fingerprint
from runtime.text import PREPROCESSING_VERSION

ARTIFACT_FILE = "artifact.json"
CALIBRATION_FILE = "calibration.txt"  # held-out cleaned units, one per line, for precision=auto


def read_artifact_meta(path: Path, need_weights: bool = True) -> dict:
    """artifact.json of a training artifact, checked against this code's preprocessing version (and, unless
    `need_weights` is False, for the model weights a Classifier will load)."""
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a folder; pass the output folder of python -m training.train")
    meta_path = path / ARTIFACT_FILE
    if not meta_path.is_file():
        raise ArtifactError(f"{path} has no {ARTIFACT_FILE}: it is not a training artifact "
                            "(train one with python -m training.train)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    # transformers would fail later with a traceback; a folder copied without its weights is the usual cause.
    if need_weights and not any(path.glob("model*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        raise ArtifactError(f"{path} has {ARTIFACT_FILE} but no model weights (model.safetensors): copy the whole "
                            "artifact folder, or train again with python -m training.train")
    if meta.get("preprocessing_version") != PREPROCESSING_VERSION:
        raise ArtifactError(
            f"{path} was trained with preprocessing version {meta.get('preprocessing_version')!r} but this code "
            f"cleans text as version {PREPROCESSING_VERSION!r}; retrain it so serving sees what training saw"
        )
    return meta


def calibration_units(path: Path) -> list[str] | None:
    """The artifact's calibration units, or None when it has none."""
    file = path / CALIBRATION_FILE
    return file.read_text(encoding="utf-8").splitlines() if file.is_file() else None


@dataclass
class LoadedArtifact:
    """Everything read from an artifact folder, before any precision is chosen."""

    path: Path
    meta: dict
    model: Any  # a transformers sequence-classification model, on `device`
    tokenizer: Any
    lexical: Any  # the TF-IDF half (runtime.lexical.LexicalModel) or None
    # Taken before loading: files derived from these weights (ONNX graphs, precision.json) are
    # matched against it, never against whatever the folder holds later.
    fingerprint: str


def load_artifact(path: str | Path, device: str | None = None) -> LoadedArtifact:
    """Read and check an artifact folder; the model goes to `device` (default: cuda when present)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import runtime.modeling  # noqa: F401  registers our pooled classifier with the Auto classes

    path = Path(path)
    meta = read_artifact_meta(path)
    fingerprint = weights_fingerprint(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    lexical = None
    if meta.get("tfidf_fusion"):
        from runtime.lexical import LexicalModel

        if not LexicalModel.present(path):
            raise ArtifactError(f"{path} was trained with model.tfidf_fusion but its TF-IDF files are missing; "
                                "copy the whole artifact folder")
        try:
            lexical = LexicalModel.load(path)
        except Exception as exc:  # bad JSON, a damaged .npz (zip) or missing arrays: all mean a broken copy
            raise ArtifactError(f"{path}: its TF-IDF files cannot be read ({type(exc).__name__}: {exc}); copy "
                                "the whole artifact folder again or retrain") from None
    return LoadedArtifact(path, meta, model, tokenizer, lexical, fingerprint)
