"""Each distinct unit scored once per model: in a run always, across runs with `--cache DIR`.

Crawls repeat text: a site's menus, footers and ICP lines are on every one of its pages, and a
reposted notice brings the same sentences from many sites. `ReusingScorer` stands in for a
`Classifier` in the batch engines: it looks every cleaned unit up by its text, scores only the
texts it has not seen, and decides labels from the stored probabilities exactly as the
classifier does. In memory it keeps the most recently used `memory_items` texts (least recently
used ones are dropped, so memory stays bounded on any crawl). With a cache folder it also keeps
them on disk (`diskcache`, SQLite underneath; several processes may share one folder), under a
key that names the model's weights, its artifact, the precision and the preprocessing version:
entries made by any other model, precision or cleaning are never read.

The records are those of a run without reuse (tests/serving/test_reuse.py): the same labels, and the
same scores up to the float noise a unit's batch-mates cause (at most a few units in the sixth
decimal for e5, as a different --chunk-units gives without reuse; none for the test model). Under
int8 dynamic quantization, whose activation scales are set per batch, scores follow the batches'
make-up more strongly.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.decide import Prediction
from runtime.text import PREPROCESSING_VERSION

log = logging.getLogger(__name__)

# Texts kept in memory: one entry is a few hundred bytes (the text and seven float64), so ~100 MB at most.
MEMORY_ITEMS = 200_000
# Size limit of a cache folder; diskcache evicts the least recently used entries beyond it.
DISK_LIMIT_BYTES = 4 * 1024**3
# Bumped when what an entry holds changes, so older entries are never read as the new kind.
ENTRY_VERSION = 1


def scoring_identity(classifier, model_id: str) -> str:
    """What a stored score depends on: the weights, the artifact (thresholds aside, which are applied after
    lookup), the precision and the cleaning. Two runs share entries only when all of them are equal."""
    parts = {"weights": classifier.weights_fingerprint, "artifact": model_id, "precision": classifier.precision,
             "preprocessing": PREPROCESSING_VERSION, "prefix": classifier.text_prefix,
             "max_length": classifier.max_length, "entry": ENTRY_VERSION}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class ReuseStats:
    units: int = 0  # units asked for
    computed: int = 0  # distinct texts the model scored (found neither in memory nor in the cache folder)
    from_disk: int = 0  # distinct texts read from the cache folder

    @property
    def distinct(self) -> int:
        """Distinct texts met (exact unless more than MEMORY_ITEMS of them were seen)."""
        return self.computed + self.from_disk

    @property
    def saved(self) -> int:
        return self.units - self.computed

    def line(self) -> str:
        return (f"{self.units} units, {self.distinct} distinct, {self.computed} scored by the model: "
                f"{self.saved} encoder passes saved"
                + (f" ({self.from_disk} distinct texts from the cache folder)" if self.from_disk else ""))


class ReusingScorer:
    """A Classifier's `predict` for cleaned units, each distinct text scored once."""

    def __init__(self, classifier, identity: str, cache_dir: str | Path | None = None,
                 memory_items: int = MEMORY_ITEMS) -> None:
        self.classifier = classifier
        self.identity = identity
        self.memory_items = memory_items
        self.memory: OrderedDict[str, tuple[np.ndarray, bool]] = OrderedDict()
        self.stats = ReuseStats()
        self.disk = None
        if cache_dir is not None:
            import diskcache

            self.disk = diskcache.Cache(str(cache_dir), size_limit=DISK_LIMIT_BYTES)

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    @property
    def other(self) -> str:
        return self.classifier.other

    def _remember(self, text: str, entry: tuple[np.ndarray, bool]) -> None:
        self.memory[text] = entry
        self.memory.move_to_end(text)
        if len(self.memory) > self.memory_items:
            self.memory.popitem(last=False)

    def _lookup(self, text: str) -> tuple[np.ndarray, bool] | None:
        entry = self.memory.get(text)
        if entry is not None:
            self.memory.move_to_end(text)
            return entry
        if self.disk is not None:
            entry = self.disk.get((self.identity, text))
            if entry is not None:
                self.stats.from_disk += 1
                self._remember(text, entry)
        return entry

    def predict(self, texts: Sequence[str], already_clean: bool = True) -> list[Prediction]:
        """Label sets for cleaned units, in order; only texts never seen by this model are scored."""
        if not already_clean:
            raise ValueError("ReusingScorer takes cleaned units (runtime.text.split_units output)")
        self.stats.units += len(texts)
        entries: dict[str, tuple[np.ndarray, bool] | None] = {}
        for text in texts:
            if text not in entries:
                entries[text] = self._lookup(text)
        missing = [text for text, entry in entries.items() if entry is None]
        if missing:
            probs, truncated = self.classifier.scores(missing)
            self.stats.computed += len(missing)
            for text, row, cut in zip(missing, probs, truncated):
                entry = (row.copy(), bool(cut))
                entries[text] = entry
                self._remember(text, entry)
                if self.disk is not None:
                    self.disk.set((self.identity, text), entry)
        if not texts:
            return []
        probs = np.stack([entries[text][0] for text in texts])
        truncated = np.array([entries[text][1] for text in texts], dtype=bool)
        return self.classifier.decide(probs, truncated)

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()
