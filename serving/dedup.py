"""Syndicated copies of one article in a scored crawl, grouped.

    python -m serving.dedup scored/units.jsonl                 # -> scored/units.groups.jsonl
    python -m serving.dedup scored/units.parquet -o groups.jsonl --threshold 0.6

Crawls of Chinese government and news portals repeat two kinds of text. Every page of a site
carries the site's furniture (menus, breadcrumbs, footers, ICP lines, related-article lists), and
one notice is reposted by dozens of portals, each under its own furniture. So pages are compared
by their bodies, not their whole text:

1. `page_bodies`: a unit is **furniture** when its text occurs on at least
   max(FURNITURE_MIN_PAGES, ⌈FURNITURE_SHARE × pages of the site⌉) pages of the same site (the url's
   host, `www.` dropped, as in the crawl report): 2 pages on a site of up to 40 pages, 5 % of them on
   a bigger one. Menus and footers are on nearly every page of a site; a notice posted in two columns,
   or crawled under two urls, is on two, and on a big site it stays text. (On a small site it reads as
   furniture: see Limits.) The body is every other unit. Text repeated across different sites is
   never furniture: that is what syndication looks like. Pages without a url have no site to compare
   with (a crawl of bare texts could put two copies of one article there), so none of their units is
   furniture; their site is NO_SITE.
2. `group_pages`: the body, lowercased and without whitespace or punctuation (copies differ in
   both), is cut into character shingles of SHINGLE characters, sketched with datasketch's MinHash
   (DEFAULT_NUM_PERM permutations, fixed SEED, so every run gives the same groups) and indexed in a
   MinHash LSH. The LSH only proposes pairs; its bands are set so that a pair exactly at the
   threshold is proposed with probability ≥ LSH_RECALL (42 bands of 3 rows for 0.5 and 128). A
   proposed pair is a copy when its estimated Jaccard similarity is ≥ the threshold; copies are
   joined transitively (union-find). A page whose body is empty (all furniture) or shorter than one
   shingle is its own group.

Each page gets a Group: `group` (the canonical page's doc_id, stable across runs), `canonical`
(the member with the earliest date, else the first in input order), `size` (pages in the group)
and `sites` (distinct sites among them).

Parameters, chosen on constructed pairs of corpus articles (`python -m bench.dedup`; the figures are
in bench/results/dedup.json). Shingles of 5 characters leave the widest gap between copies that must
group (a preface line added, a tenth of the sentences dropped or replaced, a character edited in
every sentence) and pairs that must not (one sentence shared, two articles on one topic): shorter
shingles make topic words look shared, longer ones let each edited character break more shingles.
Of the thresholds 0.3, 0.4, …, 0.7 at 128 permutations, 0.5 is the one that both keeps every pair
sharing half of its sentences apart and still groups every copy with a fifth of its sentences
replaced or its last 30 % cut. 64 permutations lost a few of those copies; 256 changed nothing, at
twice the sketch time. rensa (Rust) grouped the same pages about twice as fast; that is seconds
for a crawl whose scoring takes hours, so datasketch stays.

Limits: an article on two pages of one small site reads as that site's furniture, so both pages
lose the text they share and group with nothing. Two copies of which one is cut to less than half, or a
summary of an article, are not grouped (their Jaccard similarity is below 0.5).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping
from urllib.parse import urlparse

if TYPE_CHECKING:
    import numpy as np

NO_SITE = "(no url)"  # the site of a page without a url (the crawl report's name for it too)
DEFAULT_THRESHOLD = 0.5  # estimated Jaccard similarity of two bodies' shingle sets for them to be copies
DEFAULT_NUM_PERM = 128  # MinHash permutations
SHINGLE = 5  # characters per shingle
SEED = 1  # MinHash permutation seed: fixed, so groups are the same on every run
FURNITURE_MIN_PAGES = 2  # a unit text on this many pages of one site is furniture ...
FURNITURE_SHARE = 0.05  # ... or on this share of the site's pages, whichever is more
LSH_RECALL = 0.99  # chance that the LSH proposes a pair whose similarity is exactly the threshold

_NOT_WORD = re.compile(r"[\W_]+")  # whitespace, punctuation, symbols: copies differ in these
_POLY = 0x9E3779B97F4A7C15  # odd multiplier of the rolling shingle hash (mod 2^64)


@dataclass(frozen=True)
class PageBody:
    """One page: its site, its units in order, and the units that are not the site's furniture."""

    doc_id: str
    site: str
    url: str | None
    units: tuple[dict, ...]
    body_units: tuple[dict, ...]
    body: str = field(init=False)  # the body units' texts, one per line

    def __post_init__(self) -> None:
        object.__setattr__(self, "body", "\n".join(_text(u) for u in self.body_units))

    @property
    def furniture(self) -> tuple[dict, ...]:
        kept = {id(u) for u in self.body_units}
        return tuple(u for u in self.units if id(u) not in kept)


@dataclass(frozen=True)
class Group:
    """The group of copies a page belongs to."""

    group: str  # the group's id: its canonical page's doc_id
    canonical: str  # the member with the earliest date, else the first one in input order
    size: int  # pages in the group (1: no copy found)
    sites: int  # distinct sites among them

    def record(self, doc_id: str) -> dict:
        """The CLI's output line for page `doc_id`."""
        return {"doc_id": doc_id, "group": self.group, "canonical": self.canonical, "size": self.size,
                "sites": self.sites}


def site_of(url: object) -> str:
    """The url's host without `www.`; NO_SITE when there is no url or no host."""
    if not url or not isinstance(url, str):
        return NO_SITE
    host = urlparse(url if "://" in url else "//" + url).hostname or ""
    host = host.lower().removeprefix("www.")
    return host or NO_SITE


def _text(unit: Mapping) -> str:
    text = unit.get("text")
    return text.strip() if isinstance(text, str) else ""


def _order(unit: Mapping) -> int:
    index = unit.get("index")
    return index if isinstance(index, int) else 0


def furniture_pages(site_pages: int) -> int:
    """On how many pages of a site with `site_pages` pages a unit text must occur to be furniture."""
    return max(FURNITURE_MIN_PAGES, math.ceil(FURNITURE_SHARE * site_pages))


def page_bodies(units: Iterable[Mapping]) -> dict[str, PageBody]:
    """Per doc_id (in first-seen order): site, units sorted by `index`, and the body = the units that are
    not furniture of the page's site (see the module docstring). Units need `doc_id` and `text`;
    `url` and `index` are used when present."""
    by_doc: dict[str, list[Mapping]] = {}
    urls: dict[str, str | None] = {}
    for unit in units:
        doc_id = str(unit["doc_id"])
        by_doc.setdefault(doc_id, []).append(unit)
        if not urls.get(doc_id) and isinstance(unit.get("url"), str) and unit["url"]:
            urls[doc_id] = unit["url"]
    for doc_units in by_doc.values():
        doc_units.sort(key=_order)  # stable: records without an index keep their order
    sites = {doc_id: site_of(urls.get(doc_id)) for doc_id in by_doc}
    # Pages counted per site and text; a page without a url is a site of its own here.
    scope = {doc_id: (sites[doc_id] if sites[doc_id] != NO_SITE else "\0" + doc_id) for doc_id in by_doc}
    site_pages = Counter(scope.values())
    seen_on: dict[str, Counter] = defaultdict(Counter)
    for doc_id, doc_units in by_doc.items():
        seen_on[scope[doc_id]].update({_text(u) for u in doc_units} - {""})
    bodies = {}
    for doc_id, doc_units in by_doc.items():
        counts, needed = seen_on[scope[doc_id]], furniture_pages(site_pages[scope[doc_id]])
        body = tuple(u for u in doc_units if _text(u) and counts[_text(u)] < needed)
        bodies[doc_id] = PageBody(doc_id, sites[doc_id], urls.get(doc_id), tuple(doc_units), body)
    return bodies


# ----------------------------------------------------------------------------- sketches


def comparable(text: str) -> str:
    """What is compared of a body: its letters and digits, lowercased (copies differ in spacing and punctuation)."""
    return _NOT_WORD.sub("", text.lower())


def shingle_hashes(text: str, size: int = SHINGLE) -> np.ndarray:
    """32-bit hashes of the text's `size`-character shingles, after lowercasing and dropping whitespace and
    punctuation; empty when fewer than `size` characters are left. A polynomial rolling hash over the code
    points, vectorised with numpy (datasketch mixes every input hash with MurmurHash3's finaliser before
    permuting, so a plain hash suffices); the same on every platform and run."""
    import numpy as np

    letters = comparable(text)
    n = len(letters) - size + 1
    if n < 1:
        return np.zeros(0, dtype=np.uint32)
    points = np.frombuffer(letters.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    hashes = np.zeros(n, dtype=np.uint64)
    multiplier = np.uint64(_POLY)
    for offset in range(size):
        hashes = hashes * multiplier + points[offset:offset + n]  # wraps mod 2^64, as intended
    return (hashes ^ (hashes >> np.uint64(32))).astype(np.uint32)


def _identity(value: int) -> int:
    return value


def sketch(text: str, num_perm: int = DEFAULT_NUM_PERM, shingle_size: int = SHINGLE, permutations=None):
    """The datasketch MinHash of the text's shingles (seed SEED); None when it has no shingle.
    `permutations`: another such MinHash's, to skip generating them again."""
    from datasketch import MinHash

    hashes = shingle_hashes(text, shingle_size)
    if not len(hashes):
        return None
    if permutations is None:
        minhash = MinHash(num_perm=num_perm, seed=SEED, hashfunc=_identity)
    else:
        minhash = MinHash(num_perm=num_perm, seed=SEED, hashfunc=_identity, permutations=permutations,
                          scheme="affine32")
    minhash.update_batch(hashes.tolist())
    return minhash


def lsh_bands(threshold: float, num_perm: int, recall: float = LSH_RECALL) -> tuple[int, int]:
    """(bands, rows per band) for the LSH: the most rows per band (fewest needless candidates) with which a pair
    of similarity `threshold` still shares a band with probability ≥ `recall`."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold ** rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


# ----------------------------------------------------------------------------- groups


def group_pages(units: Iterable[Mapping], threshold: float = DEFAULT_THRESHOLD, num_perm: int = DEFAULT_NUM_PERM,
                dates: Mapping[str, str | None] | None = None, shingle_size: int = SHINGLE) -> dict[str, Group]:
    """Group pages whose bodies are copies of each other; a Group per doc_id, in first-seen order.

    units: unit records of a scored crawl (serving.output.read_units reads JSONL and Parquet alike).
    threshold: estimated Jaccard similarity of the bodies' shingle sets from which two pages are copies.
    dates: doc_id -> YYYY-MM-DD (e.g. serving.report.page_date's); the earliest dated member of a group is its
    canonical page, undated members come after dated ones, ties go to input order.
    """
    return group_bodies(page_bodies(units), threshold, num_perm, dates, shingle_size)


def group_bodies(bodies: Mapping[str, PageBody], threshold: float = DEFAULT_THRESHOLD,
                 num_perm: int = DEFAULT_NUM_PERM, dates: Mapping[str, str | None] | None = None,
                 shingle_size: int = SHINGLE) -> dict[str, Group]:
    """group_pages on bodies already found by page_bodies."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    doc_ids = list(bodies)
    sketches: list = []
    permutations = None
    for doc_id in doc_ids:
        minhash = sketch(bodies[doc_id].body, num_perm, shingle_size, permutations)
        if minhash is not None and permutations is None:
            permutations = minhash.permutations
        sketches.append(minhash)
    parent = _link(sketches, threshold, num_perm)
    members: dict[int, list[int]] = defaultdict(list)
    for position in range(len(doc_ids)):
        members[_root(parent, position)].append(position)
    dates = dates or {}
    groups: dict[str, Group] = {}
    for positions in members.values():
        ids = [doc_ids[p] for p in positions]  # in input order
        canonical = ids[min(range(len(ids)), key=lambda i: (not dates.get(ids[i]), dates.get(ids[i]) or "", i))]
        group = Group(canonical, canonical, len(ids), len({bodies[d].site for d in ids}))
        groups.update(dict.fromkeys(ids, group))
    return {doc_id: groups[doc_id] for doc_id in doc_ids}


def _root(parent: list[int], node: int) -> int:
    while parent[node] != node:
        parent[node] = parent[parent[node]]  # path halving
        node = parent[node]
    return node


def _link(sketches: list, threshold: float, num_perm: int) -> list[int]:
    """Union-find parents over the pages: LSH candidates confirmed by estimated Jaccard ≥ threshold."""
    parent = list(range(len(sketches)))
    indexed = [i for i, m in enumerate(sketches) if m is not None]
    if len(indexed) < 2:
        return parent
    import numpy as np
    from datasketch import MinHashLSH

    signatures = np.stack([sketches[i].hashvalues for i in indexed])
    row = {page: r for r, page in enumerate(indexed)}
    lsh = MinHashLSH(num_perm=num_perm, params=lsh_bands(threshold, num_perm))
    with lsh.insertion_session() as session:
        for page in indexed:
            session.insert(page, sketches[page], check_duplication=False)
    for page in indexed:
        roots = _root(parent, page)
        candidates = sorted(c for c in lsh.query(sketches[page]) if c > page and _root(parent, c) != roots)
        if not candidates:
            continue
        rows = [row[c] for c in candidates]
        similar = (signatures[rows] == signatures[row[page]]).mean(axis=1) >= threshold  # MinHash.jaccard
        for candidate, is_copy in zip(candidates, similar):
            if is_copy:
                a, b = _root(parent, page), _root(parent, candidate)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return parent


def summary(groups: Mapping[str, Group], bodies: Mapping[str, PageBody] | None = None) -> dict:
    """Counts for the one-line summary: pages, groups, copies (pages that are not their group's canonical),
    articles found on 2+ pages, the largest group, and pages that are all furniture (when bodies are given)."""
    distinct = {g.group: g for g in groups.values()}
    largest = max(distinct.values(), key=lambda g: (g.size, g.sites), default=None)
    return {
        "pages": len(groups),
        "groups": len(distinct),
        "copies": len(groups) - len(distinct),
        "syndicated_groups": sum(g.size > 1 for g in distinct.values()),
        "largest": largest,
        "empty_bodies": None if bodies is None else sum(not b.body_units for b in bodies.values()),
    }


# ----------------------------------------------------------------------------- command line


class DedupError(Exception):
    """An input or output the command cannot use; the message says what to pass instead."""


def default_output(scored: Path) -> Path:
    """SCORED's stem + .groups.jsonl beside it, for a unit JSONL and for a Parquet folder alike (beside the
    folder, like the scorer's .pages.jsonl: a non-Parquet file inside it breaks pandas and Arrow reading it)."""
    return scored.with_name(scored.stem + ".groups.jsonl")


def load_units(scored: Path) -> list[dict]:
    """Unit records of the scorer's output at `scored` (JSONL file or Parquet folder), checked."""
    from serving.output import is_parquet, read_units

    if scored.name.endswith(".pages.jsonl"):
        raise DedupError(f"{scored} is the page-summary file; pass the unit file beside it "
                         f"({scored.name.removesuffix('.pages.jsonl')}.jsonl)")
    if not scored.exists():
        raise DedupError(f"{scored} does not exist; pass the unit file python -m serving.batch wrote with -o")
    if is_parquet(scored) != scored.is_dir():
        raise DedupError(f"{scored} is a {'folder' if scored.is_dir() else 'file'}; pass a unit .jsonl file or the "
                         ".parquet folder python -m serving.batch writes with -o")
    try:
        records = read_units(scored)
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON, not Parquet
        raise DedupError(f"cannot read {scored}: {getattr(exc, 'strerror', None) or exc}") from None
    if not records:
        raise DedupError(f"{scored} holds no units: score a crawl first with python -m serving.batch")
    for number, record in enumerate(records, 1):
        if not (isinstance(record, dict) and record.get("doc_id") is not None and isinstance(record.get("text"), str)):
            raise DedupError(f"{scored}: record {number} is not a unit record (it needs doc_id and text); pass the "
                             "unit file python -m serving.batch wrote with -o")
    return records


def page_dates(scored: Path, bodies: Mapping[str, PageBody]) -> dict[str, str | None]:
    """Each page's date as the crawl report finds it: a date field of its summary line (SCORED's .pages.jsonl,
    when there) or of its units, else the date printed on the page."""
    from runtime.jsonl import read_jsonl
    from serving.output import pages_path
    from serving.report import page_date

    summaries: dict[str, dict] = {}
    path = pages_path(scored)
    if path.is_file():
        try:
            for line in read_jsonl(path):
                if isinstance(line.record, dict) and line.record.get("doc_id") is not None:
                    summaries[str(line.record["doc_id"])] = line.record
        except (OSError, ValueError):
            summaries = {}  # dates are a tie-breaker; the groups stand without them
    return {doc_id: page_date(summaries.get(doc_id, {}), list(body.units))[0] for doc_id, body in bodies.items()}


def write_groups(out: Path, groups: Mapping[str, Group]) -> None:
    """One JSON line per page, written to a temporary file and renamed, so a reader never sees half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for doc_id, group in groups.items():
            handle.write(json.dumps(group.record(doc_id), ensure_ascii=False) + "\n")
    os.replace(tmp, out)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _threshold(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"must be a number above 0 and at most 1, got {value!r}")
    return number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.dedup",
        description="Group syndicated copies of one article in a crawl scored by python -m serving.batch: pages "
                    "whose bodies (the units that are not their site's menus, footers and other furniture) share "
                    "most of their text. Writes one JSON line per page: doc_id, group (the canonical page's "
                    "doc_id), canonical (the earliest dated copy, else the first one in the file), size (pages in "
                    "the group) and sites (distinct sites among them).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Dates come from the page-summary file beside SCORED (SCORED's stem + .pages.jsonl) or the page's own "
               "printed date, as in the crawl report.\n"
               "Example: python -m serving.dedup scored/units.jsonl            # -> scored/units.groups.jsonl\n"
               "         python -m serving.dedup scored/units.parquet --threshold 0.6")
    parser.add_argument("scored", type=Path,
                        help="the unit records python -m serving.batch wrote with -o: a .jsonl file or a "
                             ".parquet folder")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="groups JSONL to write (default: SCORED's stem + .groups.jsonl beside it, "
                             "e.g. scored/units.groups.jsonl)")
    parser.add_argument("--threshold", type=_threshold, default=DEFAULT_THRESHOLD,
                        help=f"estimated Jaccard similarity of two bodies' {SHINGLE}-character shingles from which "
                             f"they are copies (default {DEFAULT_THRESHOLD}; higher: only closer copies)")
    args = parser.parse_args(argv)
    out = args.output or default_output(args.scored)
    try:
        if out.resolve().parent == args.scored.resolve() and not out.name.startswith(("_", ".")):
            raise DedupError(f"{out} is inside the Parquet folder, where pandas and Arrow would read it as a part; "
                             "write it beside the folder (the default) or name it _groups.jsonl")
        bodies = page_bodies(load_units(args.scored))
        groups = group_bodies(bodies, args.threshold, dates=page_dates(args.scored, bodies))
        write_groups(out, groups)
    except DedupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    counts = summary(groups, bodies)
    largest = counts["largest"]
    print(f"{_n(counts['pages'], 'page')}, {_n(counts['groups'], 'group')}: {_n(counts['copies'], 'page')} "
          f"{'is a copy' if counts['copies'] == 1 else 'are copies'} of another "
          f"({_n(counts['syndicated_groups'], 'article')} on 2+ pages); largest group {_n(largest.size, 'page')} on "
          f"{_n(largest.sites, 'site')} (canonical {largest.canonical}); {_n(counts['empty_bodies'], 'page')} "
          f"all furniture -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
