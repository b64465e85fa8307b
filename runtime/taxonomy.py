"""The label scheme, read from labels/taxonomy.yaml (the single source of the label list)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from runtime.errors import ConfigError


@dataclass(frozen=True)
class Taxonomy:
    directions: tuple[str, ...]  # the model's output labels, in order
    other: str  # the label of a unit that names no direction
    names: dict[str, str]  # id -> Chinese name
    cues: dict[str, tuple[str, ...]]  # direction id -> cue strings (simplified script)

    @property
    def all_labels(self) -> list[str]:
        """Directions followed by `other`: the columns of every report."""
        return [*self.directions, self.other]

    def check(self, labels: list[str], where: str) -> None:
        """Raise ConfigError if `labels` is not a valid label set."""
        if not labels:
            raise ConfigError(f"{where}: empty label list (use [{self.other!r}] for a unit that names no direction)")
        unknown = [label for label in labels if label not in self.directions and label != self.other]
        if unknown:
            raise ConfigError(f"{where}: unknown label(s) {unknown}; valid: {self.all_labels}")
        if self.other in labels and len(labels) > 1:
            raise ConfigError(f"{where}: {self.other!r} cannot be combined with a direction ({labels})")
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{where}: repeated label in {labels}")


def load_taxonomy(path: str | Path = "labels/taxonomy.yaml") -> Taxonomy:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"taxonomy file {path} not found (run from the repository root or set data.taxonomy)")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    other = raw.get("other", "other")
    entries = raw.get("labels") or []
    directions = tuple(e["id"] for e in entries if e["id"] != other)
    if len(directions) < 2:
        raise ConfigError(f"{path}: need at least two direction labels, found {list(directions)}")
    if len(set(directions)) != len(directions):
        raise ConfigError(f"{path}: duplicate label ids")
    return Taxonomy(
        directions=directions,
        other=other,
        names={e["id"]: e.get("zh", e["id"]) for e in entries},
        cues={e["id"]: tuple(e.get("cues") or ()) for e in entries if e["id"] != other},
    )
