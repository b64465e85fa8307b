"""Where batch results go: the resumable writer, shared by both engines.

Files, for OUT = scored/units.jsonl:
- scored/units.jsonl        one record per unit (doc_id, url, span, cleaned text, labels, scores,
                            truncated, damaged: the unit looks like text decoded with the wrong codec;
                            with --explain, evidence: {direction: [{start, end, text, weight}]})
- scored/units.pages.jsonl  one summary per document: the commit record. A document is finished
                            once its summary line is on disk; its unit lines were fsynced before it.
- scored/units.errors.jsonl every path or line of this run that was skipped or failed, and every
                            scored document with a warning, with the reason (rewritten each run)
- scored/units.run.json     the model, precision and unit cap the output was started with; a resume
                            with another model or precision is refused.

Recovery (`start`) streams both files: it keeps the ids of finished documents, cuts a torn last
summary line, and cuts the unit lines after the last finished document's (they belong to the one
document that was being written when the run died).

With OUT = scored/units.parquet the unit records go to a Parquet dataset instead, a folder of
part files (`scored/units.parquet/part-00000.parquet`, ...) that pandas, Arrow, DuckDB, Spark and
Ray read as one table; the other three files are the same. A part is written to a temporary name,
fsynced and renamed, and only then are its documents' summary lines appended: a part whose
documents are not all committed was cut off by a crash, and recovery deletes it and forgets its
documents, which the rerun scores again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

from runtime.jsonl import read_jsonl

log = logging.getLogger("serving.batch")

# Changing one of these changes the records, so a resume must use the same values.
RUN_KEYS = ("model_id", "precision", "max_units_per_doc", "preprocessing_version", "record_version", "explain")
# What a manifest written before a key existed meant by its absence: no evidence was written.
RUN_DEFAULTS = {"explain": False}
# The fields of a unit record; bumped when one is added (2: `damaged`), so a resume never mixes
# records (or Parquet parts) with and without it.
RECORD_VERSION = 2


class ResumeMismatch(Exception):
    """The output was started with another model, precision or unit cap."""


PART_UNITS = 20_000  # units buffered per Parquet part: few files, little rescoring after a crash


def is_parquet(out: Path) -> bool:
    return out.suffix.lower() == ".parquet"


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
    if is_parquet(out):
        return _recover_parquet(out, done)
    if out.exists():
        end, _ = _scan(out, lambda record: record.get("doc_id") in done)
        _cut(out, end, "unit lines of an unfinished document")
    return done


def _recover_parquet(out: Path, done: set[str]) -> set[str]:
    """Delete temporary parts and parts whose documents are not all committed; forget those documents."""
    import pyarrow.parquet as pq

    if out.exists() and not out.is_dir():
        raise ResumeMismatch(f"{out} is a file, not the Parquet folder this scorer writes; choose another --output")
    if not out.is_dir():
        return done
    for tmp in out.glob("*.tmp"):
        tmp.unlink()
    dropped: set[str] = set()
    for part in sorted(out.glob("part-*.parquet")):
        try:
            ids = set(pq.read_table(part, columns=["doc_id"]).column("doc_id").to_pylist())
        except (OSError, ValueError) as exc:  # a part cut short on a filesystem without atomic rename
            log.info("removing unreadable part %s (%s)", part, exc)
            part.unlink()
            continue
        if not ids <= done:
            log.info("removing %s: %d of its documents have no summary line (cut off by a crash)",
                     part, len(ids - done))
            part.unlink()
            dropped |= ids & done
    if dropped:
        pages = pages_path(out)
        kept = [line for line in pages.read_bytes().splitlines(keepends=True)
                if json.loads(line)["doc_id"] not in dropped]
        tmp = pages.with_name(pages.name + ".tmp")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, pages)
        done -= dropped
    return done


def start(out: Path, run: dict) -> set[str]:
    """Check that a resume uses the same model and precision, recover, and record this run."""
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = manifest_path(out)
    done = recover(out)
    if manifest.exists() and done:
        before = json.loads(manifest.read_text(encoding="utf-8"))
        changed = [key for key in RUN_KEYS
                   if before.get(key, RUN_DEFAULTS.get(key)) != run.get(key, RUN_DEFAULTS.get(key))]
        if changed:
            was = ", ".join(f"{key} {before.get(key)!r}" for key in changed)
            now = ", ".join(f"{key} {run.get(key)!r}" for key in changed)
            raise ResumeMismatch(
                f"{out} was started with {was} (model {before.get('model')}) but this run has {now} "
                f"(model {run.get('model')}); resume with the same --model and --precision, "
                f"or write to a new --output.")
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


def unit_schema(scores: dict, evidence: bool = False):
    """Arrow schema of a unit record, explicit so that every part agrees (a part whose urls are all
    missing would otherwise get a null-typed column that the other parts' strings do not match).
    With `evidence` (--explain): a struct with one field per direction, each a list of spans, null for a
    direction the unit was not given; offsets index the record's `text`."""
    import pyarrow as pa

    fields = [("doc_id", pa.string()), ("url", pa.string()), ("index", pa.int64()), ("start", pa.int64()),
              ("end", pa.int64()), ("text", pa.string()), ("labels", pa.list_(pa.string())),
              ("top_label", pa.string()), ("scores", pa.struct([(k, pa.float64()) for k in scores])),
              ("truncated", pa.bool_()), ("damaged", pa.bool_())]
    if evidence:
        span = pa.struct([("start", pa.int64()), ("end", pa.int64()), ("text", pa.string()), ("weight", pa.float64())])
        # `other` (the last label) never has evidence: it is the absence of a direction.
        fields.append(("evidence", pa.struct([(k, pa.list_(span)) for k in list(scores)[:-1]])))
    return pa.schema(fields)


class ParquetWriter(Writer):
    """Buffers whole documents and writes them as one Parquet part, then their summary lines."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.pages = pages_path(out).open("a", encoding="utf-8")
        self.errors = errors_path(out).open("w", encoding="utf-8")
        numbers = [int(p.stem.split("-")[1]) for p in out.glob("part-*.parquet")]
        self.next_part = max(numbers, default=-1) + 1
        self.buffer: list[tuple[dict, list[dict], dict]] = []
        self.buffered_units = 0

    def write(self, docs: Iterable[tuple[dict, list[dict], dict]]) -> None:
        for doc in docs:
            self.buffer.append(doc)
            self.buffered_units += len(doc[1])
            if self.buffered_units >= PART_UNITS:
                self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.buffer:
            return
        rows = [{"doc_id": head["doc_id"], "url": head["url"], **unit}
                for head, units, _ in self.buffer for unit in units]
        if rows:
            part = self.out / f"part-{self.next_part:05d}.parquet"
            tmp = part.with_name(part.name + ".tmp")
            schema = unit_schema(rows[0]["scores"], evidence="evidence" in rows[0])
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp, compression="zstd")
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, part)
            self.next_part += 1
        for head, _, summary in self.buffer:
            self.pages.write(json.dumps({**head, **summary}, ensure_ascii=False) + "\n")
        self.pages.flush()
        os.fsync(self.pages.fileno())
        self.buffer, self.buffered_units = [], 0

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.pages.close()
            self.errors.close()


def open_writer(out: Path) -> Writer:
    """The writer for OUT: Parquet parts for a .parquet output, JSONL lines otherwise."""
    return ParquetWriter(out) if is_parquet(out) else Writer(out)


def read_units(out: Path) -> list[dict]:
    """Every unit record of a scorer's output, JSONL or Parquet, in file order."""
    if is_parquet(out):
        import pyarrow.parquet as pq

        parts = sorted(out.glob("part-*.parquet")) if out.is_dir() else []
        return [row for part in parts for row in pq.read_table(part).to_pylist()]
    records = []
    for line in read_jsonl(out):
        if line.error:
            raise ValueError(f"{line.where}: not valid JSON ({line.error})")
        records.append(line.record)
    return records


class Tally:
    """What happened to every document or path of a run; routes outcomes to the errors file."""

    def __init__(self, writer: Writer):
        self.writer = writer
        self.written = self.units = self.resumed = self.flagged = self.capped = 0
        self.damaged_units = self.damaged_docs = 0  # units that look mis-decoded, and documents with any
        self.reuse = None  # serving.reuse.ReuseStats when each distinct unit is scored once
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
            damaged = summary.get("damaged_units", 0)
            self.damaged_units += damaged
            self.damaged_docs += damaged > 0
            if summary.get("warnings"):
                self.flagged += 1
                self.capped += "units_cap" in summary
                self.writer.note({"source": head["source"], "doc_id": head["doc_id"], "status": "scored",
                                  "reason": "; ".join(summary["warnings"])})

    def line(self) -> str:
        return (f"documents read {self.read}, skipped {self.resumed} (already in output), failed {len(self.failed)}, "
                f"written {self.written}; skipped with a reason {len(self.skipped)}; scored with a warning "
                f"{self.flagged} ({self.capped} cut to the unit cap); units written {self.units}, of which "
                f"{self.damaged_units} look mis-decoded (in {self.damaged_docs} document"
                f"{'' if self.damaged_docs == 1 else 's'}: fetch again)")
