"""File permissions of what training writes."""

from __future__ import annotations

import os
from pathlib import Path


def readable_like_other_files(folder: str | Path) -> None:
    """Give every file in `folder` the permissions a new file gets under this process's umask.

    transformers 5's `save_pretrained` writes `model.safetensors` readable by its owner only
    (0600) while every other file follows the umask (0644 under 022): a shared model folder
    whose weights no one else can read.
    """
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    for path in Path(folder).iterdir():
        if path.is_file() and not path.is_symlink() and (path.stat().st_mode & 0o777) != mode:
            path.chmod(mode)
