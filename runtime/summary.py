"""Units + predictions -> output records and a page summary. Shared by the HTTP service and the batch scorer."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from runtime.decide import Prediction
from runtime.text import Unit, looks_damaged

# A direction counts as one of a page's dominant directions when it labels at least
# this share of the page's on-topic units (or is the most frequent one).
DOMINANT_SHARE = 0.25
# ... and only the MAX_DOMINANT most frequent of those: units carry several directions, so a
# policy page that names all six would otherwise list all six, which says nothing about it.
MAX_DOMINANT = 3


def unit_records(units: Sequence[Unit], predictions: Sequence[Prediction],
                 evidence: Sequence[dict] | None = None) -> list[dict]:
    # `damaged`: the unit looks like text decoded with the wrong codec (runtime/text.py), so the page
    # is worth fetching again; the prediction of such a unit is usually `other`.
    # `evidence` (runtime/evidence.py), when asked for: {direction: [span, ...]} with offsets into `text`.
    records = [{**unit.to_dict(), **pred.to_dict(), "damaged": looks_damaged(unit.text)}
               for unit, pred in zip(units, predictions)]
    if evidence is not None:
        for record, spans in zip(records, evidence):
            record["evidence"] = spans
    return records


def dominant_directions(label_sets: Sequence[Sequence[str]], directions: Sequence[str], other: str) -> list[str]:
    """A page's dominant directions from its units' label sets: those labelling at least DOMINANT_SHARE of
    its on-topic units, at most MAX_DOMINANT, most frequent first (ties in `directions` order); else the
    most frequent one."""
    counts = Counter(label for labels in label_sets for label in labels if label in directions)
    on_topic = sum(1 for labels in label_sets if list(labels) != [other])
    ranked = sorted(counts, key=lambda label: (-counts[label], directions.index(label)))
    dominant = [label for label in ranked if on_topic and counts[label] / on_topic >= DOMINANT_SHARE][:MAX_DOMINANT]
    return dominant or ranked[:1]


def summarize(predictions: Sequence[Prediction], labels: Sequence[str], other: str) -> dict:
    """Units per label, the share of noise/off-topic units and the page's dominant directions (at most
    MAX_DOMINANT, most frequent first)."""
    counts = Counter(label for pred in predictions for label in pred.labels)
    total = len(predictions)
    on_topic = sum(1 for pred in predictions if pred.labels != [other])
    directions = [label for label in labels if label != other]
    return {
        "units": total,
        "units_per_label": {label: counts.get(label, 0) for label in labels},
        "other_share": round((total - on_topic) / total, 4) if total else 0.0,
        "dominant_directions": dominant_directions([pred.labels for pred in predictions], directions, other),
    }
