"""Which weights a derived file was made from: a fingerprint of the model files in an artifact folder.

Files derived from the weights (the ONNX graphs, precision.json) are written beside them and
reused by every later load. A retrain into the same folder replaces the weights but not those
files, and an old graph run against new weights and a new tokenizer scores like the old model or
crashes ONNX Runtime. Each derived file therefore records the fingerprint of the files it came
from, and a loader that finds a different fingerprint derives the file again.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

# What a forward pass depends on: the weights (one file, or shards and their index), the
# architecture, and the tokenizer that turns text into the ids the graph's embeddings index.
FINGERPRINTED = ("model*.safetensors", "model.safetensors.index.json", "config.json", "tokenizer*.json",
                 "special_tokens_map.json", "added_tokens.json", "vocab.txt", "*.model")


def _model_files(folder: Path) -> list[Path]:
    return sorted({path for pattern in FINGERPRINTED for path in folder.glob(pattern) if path.is_file()})


def weights_fingerprint(folder: str | Path) -> str:
    """sha256 over the names and bytes of the model files in `folder` ("sha256:<hex>").

    Hashing a few hundred MB takes a second or so; the result is kept for the process while the
    files' sizes and modification times stay the same, so the loader and the exporter share it.
    """
    folder = Path(folder).resolve()
    files = _model_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder} holds no model files ({', '.join(FINGERPRINTED)})")
    stats = tuple((path.name, path.stat().st_size, path.stat().st_mtime_ns, path.stat().st_ino) for path in files)
    return _fingerprint(str(folder), stats)


@lru_cache(maxsize=16)
def _fingerprint(folder: str, stats: tuple[tuple[str, int, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, size, _mtime, _inode in stats:
        # Name and size first, so two files cannot trade bytes across their boundary unnoticed.
        digest.update(f"{name}\0{size}\0".encode())
        with open(Path(folder) / name, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def derived_files() -> tuple[str, ...]:
    """Names of the files a loader derives from the weights and writes beside them (and their temporaries)."""
    # Imported here: predict imports this module for weights_fingerprint.
    from runtime.onnx_runtime import ONNX_FILES
    from runtime.precision import PRECISION_FILE

    names = (PRECISION_FILE, *ONNX_FILES.values())
    return names + tuple(name + ".tmp" for name in names)


def clear_derived(folder: str | Path) -> list[str]:
    """Remove from `folder` every file derived from weights that are about to be replaced; returns their names."""
    removed = []
    for name in derived_files():
        path = Path(folder) / name
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(name)
    return removed
