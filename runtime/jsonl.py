"""Reading JSONL files line by line, with `path:line` for every message about a line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


@dataclass(frozen=True)
class JsonLine:
    path: Path
    number: int  # 1-based
    record: Any  # the parsed value; None when the line is not JSON (see `error`)
    error: str | None = None  # why the line is not JSON, e.g. "Expecting value"

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"


def read_jsonl(path: Path) -> Iterator[JsonLine]:
    """Every non-blank line of a UTF-8 JSONL file, parsed; a line that is not JSON comes with `error`
    set, so each caller decides whether that stops it, is reported or is skipped."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield JsonLine(Path(path), number, json.loads(line))
            except json.JSONDecodeError as exc:
                yield JsonLine(Path(path), number, None, exc.msg)
