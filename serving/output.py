"""Where batch results go: the resumable writer, shared by both engines.

Files, for OUT = scored/units.jsonl:
- scored/units.jsonl        one record per unit (doc_id, url, span, cleaned text, labels, scores)
- scored/units.pages.jsonl  one summary per document: the commit record. A document is finished
                            once its summary line is on disk; its unit lines were fsynced before it.
- scored/units.errors.jsonl every path or line of this run that was skipped or failed, and every
                            scored document with a warning, with the reason (rewritten each run)
- scored/units.run.json     the model, precision and unit cap the output was started with; a resume
                            with another model or precision is refused.

Recovery (`start`) streams both files: it keeps the ids of finished documents, cuts a torn last
summary line, and cuts the unit lines after the last finished document's (they belong to the one
document that was being written when the run died).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

log = logging.getLogger("serving.batch")

# Changing one of these changes the records, so a resume must use the same values.
RUN_KEYS = ("model_id", "precision", "max_units_per_doc", "preprocessing_version")


class ResumeMismatch(Exception):
    """The output was started with another model, precision or unit cap."""


def pages_path(out: Path) -> Path:
    return out.with_name(out.stem + ".pages.jsonl")


def errors_path(out: Path) -> Path:
    return out.with_name(out.stem + ".errors.jsonl")


def manifest_path(out: Path) -> Path:
    return out.with_name(out.stem + ".run.json")


def _scan(path: Path, keep) -> tuple[int, int]:
    """Stream a JSONL file; returns (offset after the last line `keep` accepted, lines accepted)."""
    good_end, kept, offset = 0, 0, 0
    with path.open("rb") as handle:
        for line in handle:
            offset += len(line)
            if not line.endswith(b"\n"):
                break  # torn last line
            try:
                record = json.loads(line)
            except ValueError:
                break
            if keep(record):
                good_end, kept = offset, kept + 1
    return good_end, kept


def _cut(path: Path, size: int, what: str) -> None:
    if path.stat().st_size != size:
        log.info("cutting %s after byte %d (%s)", path, size, what)
        with path.open("r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())


def recover(out: Path) -> set[str]:
    """Ids of finished documents; cuts a torn summary line and unit lines of an unfinished document."""
    pages = pages_path(out)
    done: set[str] = set()
    if pages.exists():
        end, _ = _scan(pages, lambda record: done.add(record["doc_id"]) or True)
        _cut(pages, end, "torn summary line")
    if out.exists():
        end, _ = _scan(out, lambda record: record.get("doc_id") in done)
        _cut(out, end, "unit lines of an unfinished document")
    return done


def start(out: Path, run: dict) -> set[str]:
    """Check that a resume uses the same model and precision, recover, and record this run."""
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = manifest_path(out)
    done = recover(out)
    if manifest.exists() and done:
        before = json.loads(manifest.read_text(encoding="utf-8"))
        changed = [key for key in RUN_KEYS if before.get(key) != run.get(key)]
        if changed:
            was = ", ".join(f"{key} {before.get(key)!r}" for key in changed)
            now = ", ".join(f"{key} {run.get(key)!r}" for key in changed)
            raise ResumeMismatch(
                f"{out} was started with {was} (model {before.get('model')}) but this run has {now} "
                f"(model {run.get('model')}); resume with the same --model and --precision, or write to a new --output.")
    elif done and not manifest.exists():
        log.warning("%s has %d finished documents but no %s; assuming they were scored like this run",
                    out, len(done), manifest.name)
    tmp = manifest.with_name(manifest.name + ".tmp")
    tmp.write_text(json.dumps(run, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, manifest)
    return done


class Writer:
    """Appends whole documents: all their unit lines (fsync), then their summaries (fsync).

    Writing a group of documents with two fsyncs keeps the invariant a crash relies on:
    no summary line is on disk before its document's unit lines.
    """

    def __init__(self, out: Path):
        out.parent.mkdir(parents=True, exist_ok=True)
        self.units = out.open("a", encoding="utf-8")
        self.pages = pages_path(out).open("a", encoding="utf-8")
        self.errors = errors_path(out).open("w", encoding="utf-8")

    def write(self, docs: Iterable[tuple[dict, list[dict], dict]]) -> None:
        """docs: (document header {doc_id, url, source}, unit records, summary) per document."""
        docs = list(docs)
        if not docs:
            return
        for head, units, _ in docs:
            for unit in units:
                self.units.write(json.dumps({"doc_id": head["doc_id"], "url": head["url"], **unit},
                                            ensure_ascii=False) + "\n")
        self.units.flush()
        os.fsync(self.units.fileno())
        for head, _, summary in docs:
            self.pages.write(json.dumps({**head, **summary}, ensure_ascii=False) + "\n")
        self.pages.flush()
        os.fsync(self.pages.fileno())

    def note(self, record: dict) -> None:
        """One line in the errors file: {"source", "doc_id", "status", "reason"}."""
        self.errors.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.errors.flush()

    def close(self) -> None:
        self.units.close()
        self.pages.close()
        self.errors.close()


class Tally:
    """What happened to every document or path of a run; routes outcomes to the errors file."""

    def __init__(self, writer: Writer):
        self.writer = writer
        self.written = self.units = self.resumed = self.flagged = self.capped = 0
        self.skipped: list[dict] = []
        self.failed: list[dict] = []
        self.seen: set[str] = set()

    @property
    def read(self) -> int:
        return self.written + self.resumed + len(self.skipped) + len(self.failed)

    def first_time(self, doc_id: str, source: str) -> bool:
        """False (and a failure recorded) when this run already had a document with this id."""
        if doc_id in self.seen:
            self.outcome({"source": source, "doc_id": doc_id, "status": "failed",
                          "reason": f"duplicate document id {doc_id!r} in this run"})
            return False
        self.seen.add(doc_id)
        return True

    def outcome(self, record: dict) -> None:
        """record: {"source", "doc_id", "status": resumed|skipped|failed, "reason"}."""
        if record["status"] == "resumed":
            self.resumed += 1
            return
        (self.failed if record["status"] == "failed" else self.skipped).append(record)
        self.writer.note(record)

    def scored(self, docs: list[tuple[dict, list[dict], dict]]) -> None:
        self.writer.write(docs)
        for head, units, summary in docs:
            self.written += 1
            self.units += len(units)
            if summary.get("warnings"):
                self.flagged += 1
                self.capped += "units_cap" in summary
                self.writer.note({"source": head["source"], "doc_id": head["doc_id"], "status": "scored",
                                  "reason": "; ".join(summary["warnings"])})

    def line(self) -> str:
        return (f"documents read {self.read}, skipped {self.resumed} (already in output), failed {len(self.failed)}, "
                f"written {self.written}; skipped with a reason {len(self.skipped)}; scored with a warning "
                f"{self.flagged} ({self.capped} cut to the unit cap); units written {self.units}")
