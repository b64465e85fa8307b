"""What runs the model, in-process: one `Classifier` scores length-sorted chunks of documents.

`split_document` and `score_split` are also what the Ray engine's map and actors call, so
both engines give the same units, labels, scores and summaries.
"""

from __future__ import annotations

import signal
from typing import Iterator, Sequence

from runtime.text import Unit, split_units
from serving.output import Tally
from serving.sources import Document, Item, Outcome

# Units scored from one document; a longer document keeps its first units and says so.
DEFAULT_MAX_UNITS_PER_DOC = 10_000
# Lines longer than this are split in windows of this many characters (no real sentence is this long).
LINE_WINDOW = 200_000


def _split_line(line: str, want: int) -> list[Unit]:
    """Units of one line, stopping once there are more than `want`.

    A line longer than LINE_WINDOW characters is split one window at a time (a sentence that
    crosses a window edge becomes two units), so neither a 50 MB line without punctuation nor one
    with millions of sentences is ever cleaned or split whole.
    """
    if len(line) <= LINE_WINDOW:
        return split_units(line)
    units: list[Unit] = []
    for start in range(0, len(line), LINE_WINDOW):
        for unit in split_units(line[start:start + LINE_WINDOW]):
            units.append(Unit(len(units), unit.start + start, unit.end + start, unit.text))
        if len(units) > want:
            break
    return units


def split_document(doc: Document, max_units: int) -> tuple[list[Unit], list[str], dict | None]:
    """Units of a document (at most max_units), its warnings, and the cap record if it was cut.

    Lines are split one at a time (units never cross a line), so a document over the cap costs
    about max_units units of work however long it is.
    """
    text = doc.text
    units: list[Unit] = []
    warnings = list(doc.warnings)
    offset = 0
    for line in text.splitlines(keepends=True):
        if len(units) >= max_units:
            break
        for unit in _split_line(line, max_units + 1 - len(units)):
            units.append(Unit(len(units), unit.start + offset, unit.end + offset, unit.text))
        offset += len(line)
    cap = None
    if len(units) > max_units:
        cut = units[max_units].start
        units = units[:max_units]
        warnings.append(f"kept the first {max_units} units; the rest of the document, from character {cut} "
                        f"of {len(text)}, was not scored (--max-units-per-doc)")
        cap = {"kept": max_units, "from_char": cut, "chars": len(text)}
    return units, warnings, cap


def explain_distinct(explainer, texts: Sequence[str], predictions: Sequence) -> list[dict]:
    """Evidence per unit, each distinct text explained once (page furniture repeats, and explaining is costly)."""
    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        first.setdefault(text, i)
    order = list(first.values())
    found = dict(zip(first, explainer.explain([texts[i] for i in order], [predictions[i] for i in order])))
    return [found[text] for text in texts]


def score_split(classifier, split: Sequence[tuple[list[Unit], list[str], dict | None]],
                explainer=None) -> list[tuple[list[dict], dict]]:
    """Score every unit of several documents in one length-sorted pass; records and summary per document.
    With an `explainer` (runtime.evidence.Explainer) each record carries its evidence."""
    from runtime.summary import summarize, unit_records

    flat = [unit.text for units, _, _ in split for unit in units]
    predictions = classifier.predict(flat, already_clean=True)
    evidence = explain_distinct(explainer, flat, predictions) if explainer is not None else None
    out, cursor = [], 0
    for units, warnings, cap in split:
        preds = predictions[cursor:cursor + len(units)]
        records = unit_records(units, preds, evidence[cursor:cursor + len(units)] if evidence is not None else None)
        cursor += len(units)
        summary = summarize(preds, classifier.labels, classifier.other)
        summary["damaged_units"] = sum(record["damaged"] for record in records)
        if warnings:
            summary["warnings"] = warnings
        if cap:
            summary["units_cap"] = cap
        out.append((records, summary))
    return out


def head(doc: Document) -> dict:
    return {"doc_id": doc.id, "url": doc.url, "source": doc.source}


class Terminated(Exception):
    pass


def _raise_terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Terminated()


def run(classifier, items: Iterator[Item], tally: Tally, chunk_units: int, max_units: int, progress: bool,
        explainer=None) -> None:
    """Score documents as they stream in, about chunk_units units per length-sorted pass (and explain them
    with an `explainer`)."""
    from tqdm.auto import tqdm

    bar = tqdm(unit=" units", disable=not progress, desc="scoring", dynamic_ncols=True)
    pending: list[tuple[Document, tuple]] = []
    pending_units = 0

    def flush() -> None:
        nonlocal pending, pending_units
        if not pending:
            return
        scored = score_split(classifier, [split for _, split in pending], explainer)
        tally.scored([(head(doc), records, summary) for (doc, _), (records, summary) in zip(pending, scored)])
        bar.update(pending_units)
        bar.set_postfix(docs=tally.written, failed=len(tally.failed))
        pending, pending_units = [], 0

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        for item in items:
            if isinstance(item, Outcome):
                if item.doc_id is None or item.status == "resumed" or tally.first_time(item.doc_id, item.source):
                    tally.outcome(item.to_dict())
                continue
            if not tally.first_time(item.id, item.source):
                continue
            split = split_document(item, max_units)
            item.text = ""  # the units hold what is needed; drop the page
            pending.append((item, split))
            pending_units += len(split[0])
            if pending_units >= chunk_units:
                flush()
        flush()
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
