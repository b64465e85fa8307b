"""Where documents come from: input paths -> documents, or a reason why a path gives none.

Shared by both batch engines. `walk` turns the command-line inputs into files to read
(streaming: folders are listed one directory at a time, sorted, so the order is stable);
`read` turns one file into documents (.txt/.html: one; .jsonl: one per line). An input with a
scheme (`s3://bucket/crawl/`, `gs://…`, `hdfs://…`, `file:///…`) is opened with `pyarrow.fs`, so
every filesystem Arrow supports reads like a local folder; credentials and endpoints come from
Arrow's usual settings (AWS_* variables, `?endpoint_override=…` in the URI). Anything
that yields no document comes back as an `Outcome` with a reason, so every path ends in
exactly one of scored / skipped-with-reason / failed-with-reason.

Policy:
- skipped: empty file or line, binary file, unsupported file type inside a folder,
  symlink loop, broken symlink, symlink out of the input folders (unless follow_symlinks);
- failed: missing input, unreadable file, file over MAX_FILE_BYTES, encoding not detected,
  a .jsonl line that is not JSON or has no string "text";
- a document with a few invalid UTF-8 bytes is decoded with U+FFFD replacement and
  scored with a warning.
"""

from __future__ import annotations

import functools
import io
import json
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Union

TEXT_SUFFIXES = {".txt", ".text"}
HTML_SUFFIXES = {".html", ".htm", ".shtml", ".xhtml"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
# One .txt/.html file is read whole; beyond this it fails rather than risk the machine's memory.
MAX_FILE_BYTES = 128 * 2**20
_ASCII = bytes(range(128))
_CONTROL = bytes(b for b in range(32) if b not in b"\t\n\r\x0c\x1b")


@dataclass
class Document:
    id: str
    text: str
    url: str | None = None
    source: str = ""
    warnings: list[str] = field(default_factory=list)  # e.g. bytes replaced while decoding


@dataclass
class Outcome:
    """A path or line that gives no document: status "skipped" or "failed", and why."""

    source: str
    status: str
    reason: str
    doc_id: str | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "doc_id": self.doc_id, "status": self.status, "reason": self.reason}


@dataclass(frozen=True)
class FileTask:
    """A file to read: `kind` is "jsonl" or "file"; `doc_id` is the document id (or id prefix for jsonl)."""

    path: str
    doc_id: str
    kind: str


Item = Union[Document, Outcome]


# ----------------------------------------------------------------------------- decoding


class BinaryFile(ValueError):
    pass


def looks_binary(raw: bytes) -> bool:
    head = raw[:8192]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with a BOM is text
        return False
    if b"\x00" in head:
        return True
    return bool(head) and len(head) - len(head.translate(None, _CONTROL)) > len(head) * 0.05


def decode(raw: bytes) -> tuple[str, str | None]:
    """Bytes of unknown encoding -> (text, warning or None).

    UTF-8 first (most crawls). A few invalid bytes in otherwise UTF-8 text are replaced
    with U+FFFD and reported; text that is not UTF-8 at all goes to encoding detection
    (GB18030/GBK, Big5, ...).
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16"), None
    replaced = raw.decode("utf-8", errors="replace")
    bad = replaced.count("\ufffd") - raw.count(b"\xef\xbf\xbd")
    ascii_chars = len(raw) - len(raw.translate(None, _ASCII))
    valid = len(replaced) - ascii_chars - replaced.count("\ufffd")  # well-formed multi-byte characters
    # GBK or Big5 read as UTF-8 gives mostly invalid sequences; a damaged UTF-8 page gives a few.
    if valid >= 3 * bad and bad <= max(1, valid // 50):
        return replaced, f"utf-8 with {bad} invalid byte sequence{'s' if bad > 1 else ''} replaced by U+FFFD"
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    if best is None:
        raise ValueError("could not detect the text encoding")
    encoding = best.encoding
    # GB2312 and GBK detections are safer decoded as their superset GB18030.
    if encoding.lower().replace("-", "").replace("_", "") in {"gb2312", "gbk", "cp936"}:
        encoding = "gb18030"
    return raw.decode(encoding), None


def html_to_text(html: str) -> str:
    """Visible text of an HTML page, one block per line; scripts, styles and templates dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg", "head"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line)


# ----------------------------------------------------------------------------- walking


def _within(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _suffix(path: str) -> str:
    """The file type of a path or URI (a URI's query string is not part of it)."""
    return Path(path.partition("?")[0] if is_uri(path) else path).suffix.lower()


def _classify(path: str, doc_id: str, in_folder: bool) -> FileTask | Outcome:
    suffix = _suffix(path)
    if suffix in JSONL_SUFFIXES:
        return FileTask(path, doc_id, "jsonl")
    if suffix in TEXT_SUFFIXES | HTML_SUFFIXES or not in_folder:
        return FileTask(path, doc_id, "file")
    return Outcome(path, "skipped", f"unsupported file type {suffix or '(no suffix)'!r}: "
                                    "only .txt, .html and .jsonl are read from folders")


def walk(inputs: Iterable[str], follow_symlinks: bool = False) -> Iterator[FileTask | Outcome]:
    """Files to read, or outcomes for paths that give none, in a stable order.

    Folders are walked recursively, one directory listing in memory at a time. Inside a
    folder, a symlink is followed only when its target lies inside one of the input
    folders (or follow_symlinks); loops are detected by (device, inode).
    """
    inputs = list(inputs)
    roots = [os.path.realpath(item) for item in inputs if not is_uri(item) and os.path.isdir(item)]
    for item in inputs:
        if is_uri(item):
            yield from _walk_uri(item)
            continue
        if not os.path.lexists(item):
            yield Outcome(item, "failed", "no such file or folder")
            continue
        try:
            info = os.stat(item)
        except OSError as exc:
            yield Outcome(item, "skipped", _link_error(exc))
            continue
        if stat.S_ISDIR(info.st_mode):
            base = os.path.dirname(os.path.normpath(item))
            yield from _walk_dir(item, base, roots, follow_symlinks, {(info.st_dev, info.st_ino)}, set())
        elif stat.S_ISREG(info.st_mode):
            yield _classify(item, os.path.basename(item), in_folder=False)
        else:
            yield Outcome(item, "skipped", "not a regular file or folder")


def _link_error(exc: OSError) -> str:
    import errno

    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        return "broken symlink"
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def _walk_dir(folder: str, base: str, roots: list[str], follow: bool, ancestors: set, walked: set
              ) -> Iterator[FileTask | Outcome]:
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        yield Outcome(folder, "failed", f"cannot list folder: {type(exc).__name__}: {exc.strerror or exc}")
        return
    for entry in entries:
        path = entry.path
        rel = os.path.relpath(path, base) if base else os.path.normpath(path)
        try:
            info = os.stat(path)  # follows symlinks
        except OSError as exc:
            yield Outcome(path, "skipped", _link_error(exc))
            continue
        if entry.is_symlink():
            target = os.path.realpath(path)
            if not follow and not _within(target, roots):
                yield Outcome(path, "skipped", f"symlink to {target}, outside the input folders "
                                               "(pass --follow-symlinks to follow it)")
                continue
        key = (info.st_dev, info.st_ino)
        if stat.S_ISDIR(info.st_mode):
            if key in ancestors:
                yield Outcome(path, "skipped", "symlink loop")
                continue
            if key in walked:
                yield Outcome(path, "skipped", "folder already walked through another path")
                continue
            walked.add(key)
            yield from _walk_dir(path, base, roots, follow, ancestors | {key}, walked)
        elif stat.S_ISREG(info.st_mode):
            yield _classify(path, rel, in_folder=True)
        else:
            yield Outcome(path, "skipped", "not a regular file")


# ----------------------------------------------------------------------------- other filesystems


def is_uri(item: str) -> bool:
    """`s3://…`, `gs://…`, `file:///…`: read through pyarrow.fs (a Windows drive letter is not a scheme)."""
    head, sep, _ = item.partition("://")
    return bool(sep) and len(head) > 1 and head.replace("+", "").isalnum()


# Schemes whose URIs carry a host, not a bucket, before the path (hdfs://namenode:8020/crawl).
_HOST_SCHEMES = {"file", "hdfs", "viewfs"}


@functools.lru_cache(maxsize=32)
def _filesystem(root: str):
    """One pyarrow filesystem per scheme, bucket or host and query, reused for every file under it."""
    from pyarrow import fs as pafs

    try:
        return pafs.FileSystem.from_uri(root)[0]
    except (ValueError, OSError, ImportError) as exc:
        raise OSError(f"pyarrow.fs cannot open {root}: {exc}") from None


def _split_uri(uri: str) -> tuple[object, str, str]:
    """A URI -> (pyarrow filesystem, path inside it, prefix that turns such a path back into a URI)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    query = f"?{parts.query}" if parts.query else ""
    filesystem = _filesystem(f"{parts.scheme}://{parts.netloc}/{query}")
    if parts.scheme in _HOST_SCHEMES:
        return filesystem, unquote(parts.path).rstrip("/") or "/", f"{parts.scheme}://{parts.netloc}"
    # Object stores name the bucket first: s3://bucket/key is bucket/key to pyarrow.fs.
    return filesystem, (parts.netloc + unquote(parts.path)).rstrip("/"), f"{parts.scheme}://"


def _walk_uri(uri: str) -> Iterator[FileTask | Outcome]:
    """Files under a URI, sorted by path; listed through pyarrow.fs (the listing is held in memory)."""
    from pyarrow import fs as pafs

    try:
        filesystem, path, prefix = _split_uri(uri)
        info = filesystem.get_file_info(path)
    except OSError as exc:
        yield Outcome(uri, "failed", str(exc))
        return
    query = uri[uri.index("?"):] if "?" in uri else ""

    def full(p: str) -> str:
        return prefix + p + query

    if info.type == pafs.FileType.NotFound:
        yield Outcome(uri, "failed", "no such file or folder")
    elif info.type == pafs.FileType.File:
        yield _classify(full(path), posixpath.basename(path), in_folder=False)
    elif info.type == pafs.FileType.Directory:
        parent = posixpath.dirname(path.rstrip("/"))
        try:
            listing = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
        except OSError as exc:
            yield Outcome(uri, "failed", f"cannot list folder: {exc}")
            return
        for entry in sorted((e for e in listing if e.type == pafs.FileType.File), key=lambda e: e.path):
            yield _classify(full(entry.path), posixpath.relpath(entry.path, parent) if parent else entry.path,
                            in_folder=True)
    else:
        yield Outcome(uri, "skipped", "not a regular file or folder")


class _Source:
    """One file to read, local or behind pyarrow.fs: its size, its bytes, a binary line stream."""

    def __init__(self, path: str):
        self.name = path
        self.suffix = _suffix(path)
        self.remote = is_uri(path)
        if self.remote:
            self.fs, self.path, _ = _split_uri(path)

    def size(self) -> int:
        if not self.remote:
            return Path(self.name).stat().st_size
        from pyarrow import fs as pafs

        info = self.fs.get_file_info(self.path)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(2, "no such file", self.name)
        return info.size

    def open(self) -> io.BufferedIOBase:
        if not self.remote:
            return open(self.name, "rb")
        # Arrow's streams read in large blocks; the buffer gives them line iteration.
        return io.BufferedReader(self.fs.open_input_stream(self.path), buffer_size=1 << 20)


# ----------------------------------------------------------------------------- reading


def read(task: FileTask, done: set[str] | frozenset = frozenset()) -> Iterator[Item]:
    """Documents of one file (a .jsonl gives one per line). Documents whose id is in `done`
    come back as Outcome(status="resumed") without their text."""
    if task.kind == "jsonl":
        yield from _read_jsonl(task.path, task.doc_id, done)
    elif task.doc_id in done:
        yield Outcome(task.path, "resumed", "already in the output", task.doc_id)
    else:
        yield _read_file(task.path, task.doc_id)


def _read_file(name: str, doc_id: str) -> Item:
    source = name
    try:
        path = _Source(name)
        size = path.size()
        if size > MAX_FILE_BYTES:
            return Outcome(source, "failed", f"file of {size / 2**20:.0f} MB is over the {MAX_FILE_BYTES // 2**20} MB "
                                             "limit for one .txt/.html document; split it or convert it to .jsonl",
                           doc_id)
        with path.open() as handle:
            raw = handle.read()
    except OSError as exc:
        return Outcome(source, "failed", f"{type(exc).__name__}: {exc.strerror or exc}", doc_id)
    if not raw.strip():
        return Outcome(source, "skipped", "empty", doc_id)
    if looks_binary(raw):
        return Outcome(source, "skipped", "binary file, not text", doc_id)
    try:
        text, warning = decode(raw)
    except (ValueError, LookupError) as exc:
        return Outcome(source, "failed", str(exc), doc_id)
    del raw
    if path.suffix in HTML_SUFFIXES:
        text = html_to_text(text)
    if not text.strip():
        return Outcome(source, "skipped", "empty" if path.suffix not in HTML_SUFFIXES else "empty: no visible text",
                       doc_id)
    return Document(doc_id, text, source=source, warnings=[warning] if warning else [])


def _read_jsonl(path: str, prefix: str, done: set[str] | frozenset) -> Iterator[Item]:
    try:
        handle = _Source(path).open()
    except OSError as exc:
        yield Outcome(str(path), "failed", f"{type(exc).__name__}: {exc.strerror or exc}", prefix)
        return
    lines = 0
    with handle:
        for number, raw in enumerate(handle, 1):  # streamed: one line in memory at a time
            if not raw.strip():
                continue
            lines += 1
            doc_id, source = f"{prefix}#{number}", f"{path}:{number}"
            try:
                text, warning = decode(raw)
                record = json.loads(text)
            except ValueError as exc:
                yield Outcome(source, "failed", f"not valid JSON: {exc}", doc_id)
                continue
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                yield Outcome(source, "failed", "line has no string field 'text'", doc_id)
                continue
            if record.get("id") is not None:
                doc_id = str(record["id"])
            if doc_id in done:
                yield Outcome(source, "resumed", "already in the output", doc_id)
                continue
            if not record["text"].strip():
                yield Outcome(source, "skipped", "empty", doc_id)
                continue
            url = record.get("url")
            yield Document(doc_id, record["text"], url=str(url) if url is not None else None, source=source,
                           warnings=[warning] if warning else [])
    if lines == 0:
        yield Outcome(str(path), "skipped", "empty", prefix)


def iter_documents(inputs: Iterable[str], follow_symlinks: bool = False,
                   done: set[str] | frozenset = frozenset()) -> Iterator[Item]:
    """Every document named by the inputs, or an Outcome for each path or line that gives none."""
    for task in walk(inputs, follow_symlinks):
        if isinstance(task, Outcome):
            yield task
        else:
            yield from read(task, done)
