"""Score new crawls from the command line, resumably.

    python -m serving.batch crawl/ more.jsonl page.html -o scored/units.jsonl
    python -m serving.batch crawl/ -o scored/units.jsonl --model artifacts/offline-small

Inputs: .txt and .html/.htm files (encoding detected: UTF-8, GB18030/GBK, Big5, ...),
folders (walked recursively) and .jsonl files with one page per line
({"text": ..., "url": optional, "id": optional}).

Outputs: OUT (JSONL, one record per unit) and OUT with `.pages.jsonl` in place of its
suffix (one summary per document). A document is finished once its summary line is
written; rerunning with the same OUT skips finished documents and removes any unit
lines of an unfinished one, so an interrupted run (Ctrl-C or kill) resumes without
losing or duplicating a document.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

log = logging.getLogger("serving.batch")

TEXT_SUFFIXES = {".txt", ".text"}
HTML_SUFFIXES = {".html", ".htm", ".shtml", ".xhtml"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
DEFAULT_MODEL = "future-industry-classifier:latest"


@dataclass
class Document:
    id: str
    text: str | None
    url: str | None = None
    source: str = ""
    error: str | None = None  # why it could not be read, if it could not


@dataclass
class Tally:
    read: int = 0
    skipped: int = 0
    written: int = 0
    units: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading


def decode(raw: bytes) -> str:
    """Bytes of unknown encoding -> text. UTF-8 first (most crawls), then detection."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    if best is None:
        raise ValueError("could not detect the text encoding")
    encoding = best.encoding
    # GB2312 and GBK detections are safer decoded as their superset GB18030.
    if encoding.lower().replace("-", "").replace("_", "") in {"gb2312", "gbk", "cp936"}:
        encoding = "gb18030"
    return raw.decode(encoding)


def html_to_text(html: str) -> str:
    """Visible text of an HTML page, one block per line; scripts, styles and templates dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg", "head"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line)


def _file_document(path: Path, doc_id: str) -> Document:
    try:
        text = decode(path.read_bytes())
        if path.suffix.lower() in HTML_SUFFIXES:
            text = html_to_text(text)
        return Document(doc_id, text, source=str(path))
    except (OSError, ValueError, LookupError) as exc:
        return Document(doc_id, None, source=str(path), error=f"{type(exc).__name__}: {exc}")


def _jsonl_documents(path: Path, prefix: str) -> Iterator[Document]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        yield Document(prefix, None, source=str(path), error=f"{type(exc).__name__}: {exc}")
        return
    with handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            doc_id = f"{prefix}#{number}"
            try:
                record = json.loads(decode(raw))
            except (ValueError, UnicodeDecodeError) as exc:
                yield Document(doc_id, None, source=f"{path}:{number}", error=f"not valid JSON: {exc}")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                yield Document(doc_id, None, source=f"{path}:{number}", error="line has no string field 'text'")
                continue
            if record.get("id") is not None:
                doc_id = str(record["id"])
            url = record.get("url")
            yield Document(doc_id, record["text"], url=str(url) if url is not None else None, source=f"{path}:{number}")


def iter_documents(inputs: list[str]) -> Iterator[Document]:
    """Every document named by the inputs, in a stable order (sorted within folders)."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                suffix = child.suffix.lower()
                rel = str(child.relative_to(path.parent))
                if suffix in JSONL_SUFFIXES:
                    yield from _jsonl_documents(child, rel)
                elif suffix in TEXT_SUFFIXES | HTML_SUFFIXES:
                    yield _file_document(child, rel)
                else:
                    log.debug("skipping %s: not .txt, .html or .jsonl", child)
        elif path.is_file():
            if path.suffix.lower() in JSONL_SUFFIXES:
                yield from _jsonl_documents(path, path.name)
            else:
                yield _file_document(path, path.name)
        else:
            yield Document(item, None, source=item, error="no such file or folder")


# ----------------------------------------------------------------------------- output


def pages_path(out: Path) -> Path:
    return out.with_name(out.stem + ".pages.jsonl")


def _complete_lines(path: Path) -> list[bytes]:
    """Lines of a JSONL file, without a torn last line left by a kill mid-write."""
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # the part after the last newline is empty or torn
    good = []
    for line in complete:
        try:
            json.loads(line)
            good.append(line)
        except ValueError:
            continue
    return good


def _rewrite(path: Path, lines: list[bytes]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(b"".join(line + b"\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def recover(out: Path) -> set[str]:
    """Ids of finished documents; drops unit lines of unfinished ones and torn lines."""
    pages = pages_path(out)
    page_lines = _complete_lines(pages)
    done = {json.loads(line)["doc_id"] for line in page_lines}
    if pages.exists() and pages.stat().st_size != sum(len(line) + 1 for line in page_lines):
        _rewrite(pages, page_lines)
    if out.exists():
        unit_lines = _complete_lines(out)
        kept = [line for line in unit_lines if json.loads(line).get("doc_id") in done]
        if len(kept) != len(unit_lines) or out.stat().st_size != sum(len(x) + 1 for x in kept):
            log.info("removing %d unit lines of unfinished documents from %s", len(unit_lines) - len(kept), out)
            _rewrite(out, kept)
    return done


class Writer:
    """Appends one whole document at a time: its units, then its summary (the commit record)."""

    def __init__(self, out: Path):
        out.parent.mkdir(parents=True, exist_ok=True)
        self.units = out.open("a", encoding="utf-8")
        self.pages = pages_path(out).open("a", encoding="utf-8")

    def write(self, doc: Document, units: list[dict], summary: dict) -> None:
        for unit in units:
            self.units.write(json.dumps({"doc_id": doc.id, "url": doc.url, **unit}, ensure_ascii=False) + "\n")
        self.units.flush()
        os.fsync(self.units.fileno())
        self.pages.write(json.dumps({"doc_id": doc.id, "url": doc.url, "source": doc.source, **summary},
                                    ensure_ascii=False) + "\n")
        self.pages.flush()
        os.fsync(self.pages.fileno())

    def close(self) -> None:
        self.units.close()
        self.pages.close()


# ----------------------------------------------------------------------------- scoring


def load_classifier(model: str, batch_size: int, precision: str = "auto"):
    from training.predict import ArtifactError, Classifier

    path = Path(model)
    if path.is_dir():
        try:
            return Classifier.from_artifact(path, batch_size=batch_size, precision=precision), str(path)
        except ArtifactError as exc:
            raise SystemExit(f"error: --model: {exc}") from None
    import bentoml

    try:
        stored = bentoml.models.get(model)
    except Exception as exc:  # bentoml raises NotFound or a tag-format error
        raise SystemExit(
            f"error: --model {model!r} is neither an artifact folder nor a model in the BentoML store "
            f"({type(exc).__name__}: {exc}). Train one with python -m training.train and package it with "
            "python -m serving.package ARTIFACT_DIR, or pass the artifact folder."
        ) from None
    return Classifier.from_artifact(stored.path, batch_size=batch_size, precision=precision), str(stored.tag)


class _Terminated(Exception):
    pass


def _raise_terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _Terminated()


def run(inputs: list[str], out: Path, model: str, batch_size: int, chunk_units: int, progress: bool,
        precision: str = "auto") -> Tally:
    from tqdm.auto import tqdm

    from serving.scoring import score_pages
    from training.runtime import configure_threads

    threads = configure_threads()
    classifier, model_name = load_classifier(model, batch_size, precision)
    done = recover(out)
    log.info("model %s, %s, %d threads; %d documents already in %s", model_name, classifier.precision, threads,
             len(done), out)

    tally = Tally()
    seen: set[str] = set()
    writer = Writer(out)
    bar = tqdm(unit=" units", disable=not progress, desc="scoring", dynamic_ncols=True)
    pending: list[Document] = []
    pending_chars = 0
    previous = signal.signal(signal.SIGTERM, _raise_terminated)

    def flush() -> None:
        nonlocal pending, pending_chars
        if not pending:
            return
        for doc, (units, summary) in zip(pending, score_pages(classifier, [d.text for d in pending])):
            writer.write(doc, units, summary)
            tally.written += 1
            tally.units += len(units)
            bar.update(len(units))
        bar.set_postfix(docs=tally.written, failed=len(tally.failed))
        pending, pending_chars = [], 0

    try:
        for doc in iter_documents(inputs):
            tally.read += 1
            if doc.id in seen:
                tally.failed.append((doc.source or doc.id, f"duplicate document id {doc.id!r} in this run"))
                continue
            seen.add(doc.id)
            if doc.error:
                tally.failed.append((doc.source or doc.id, doc.error))
                continue
            if doc.id in done:
                tally.skipped += 1
                continue
            pending.append(doc)
            # Roughly one unit per 40 characters: score about chunk_units units per pass.
            pending_chars += len(doc.text or "")
            if pending_chars >= chunk_units * 40:
                flush()
        flush()
    except (KeyboardInterrupt, _Terminated):
        bar.close()
        log.warning("interrupted: %d documents finished this run; rerun the same command to resume", tally.written)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        writer.close()
        bar.close()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.batch",
        description="Split crawled pages into units, classify every unit, and write JSONL (one record per unit) "
                    "plus a page-summary JSONL. Resumable: rerun the same command after an interruption.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Inputs: .txt / .html files, folders (recursive), .jsonl with one page per line "
               "({\"text\": ..., \"url\": ..., \"id\": ...}).\n"
               "Example: python -m serving.batch crawl/ -o scored/units.jsonl --model artifacts/offline-small",
    )
    parser.add_argument("inputs", nargs="+", help="files or folders to score")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="unit-level JSONL to write (page summaries go to OUTPUT's stem + .pages.jsonl)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"BentoML model tag or training artifact folder (default {DEFAULT_MODEL})")
    parser.add_argument("--batch-size", type=int, default=64, help="units per model call (default 64)")
    parser.add_argument("--chunk-units", type=int, default=2048,
                        help="about how many units to length-sort and score together (default 2048)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"],
                        help="auto (default) keeps the fastest variant whose labels agree with fp32 on >= 99%% of "
                             "held-out units; fp32 is exact")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.batch_size < 1 or args.chunk_units < 1:
        parser.error("--batch-size and --chunk-units must be positive")
    if args.output.suffix.lower() not in JSONL_SUFFIXES:
        parser.error("--output must end in .jsonl")

    started = time.perf_counter()
    try:
        tally = run(args.inputs, args.output, args.model, args.batch_size, args.chunk_units, not args.no_progress,
                    args.precision)
    except (KeyboardInterrupt, _Terminated):
        return 130
    seconds = time.perf_counter() - started
    for where, reason in tally.failed:
        print(f"failed: {where}: {reason}", file=sys.stderr)
    print(
        f"documents read {tally.read}, skipped {tally.skipped} (already in output), "
        f"failed {len(tally.failed)}, written {tally.written}; units written {tally.units} "
        f"in {seconds:.1f} s -> {args.output} and {pages_path(args.output)}",
        file=sys.stderr,
    )
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
