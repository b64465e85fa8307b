"""Syndicated-copy grouping (serving/dedup.py): its shingle size and threshold, and datasketch against rensa.

    python -m bench.dedup                           # -> bench/results/dedup.json
    python -m bench.dedup --pages 2000 --repeats 1  # a quick run

1. Parameters. Pairs of article bodies (20 sentences) built from the labelled corpus sentences
   (labels/seed_units.jsonl, labels/authored/*.jsonl; sentences of 15+ characters, pooled by their
   first label, so two bodies from one pool are different articles on one topic). Kinds of pair:
   copies that must group (a preface and a postscript line added; 10 % of sentences dropped; 10 %
   replaced; a character changed in every third sentence or in every sentence; 20 % replaced; the
   first 70 % only), pairs in between (half or a third of the sentences shared) and pairs that must
   not group (one sentence shared; same topic, nothing shared; different topics). For each shingle
   size, the exact Jaccard similarity of every pair's shingle sets: per kind min / 5th percentile /
   median / max, and the gap between the copies that must group and the pairs that must not. Then,
   for the chosen size, the share of each kind's pairs that serving.dedup.group_bodies puts in one
   group (MinHash estimate and LSH included) at each threshold and number of permutations.
2. Speed. A crawl of N pages (default 2,000 and 20,000) on N / 40 sites: every page has 8 units of
   its site's furniture and 22 body units of about 40 characters; a body is new text from a
   character-level Markov chain (order 2) fitted on the corpus, so bodies share topic words but not
   sentences; 30 % of the pages are copies of an earlier page on another site, a one-line preface
   added and a tenth of their units replaced. Timed (median of --repeats, in-process): page_bodies
   (furniture), then grouping the bodies with
   - datasketch: serving.dedup.group_bodies as shipped (numpy shingle hashes, MinHash, MinHashLSH,
     confirmation, union-find);
   - rensa: the same shingles (as strings; rensa hashes them in Rust) sketched by
     rensa.RMinHash.from_token_sets, indexed in rensa.RMinHashLSH and queried with query_all,
     candidates confirmed by the same estimated-Jaccard test and union-find. rensa needs num_perm
     divisible by the bands, so it runs with 126 permutations in 42 bands of 3 rows: the banding
     serving.dedup uses for 128 permutations at threshold 0.5 (two permutations unused).
   Both must find the same groups: the share of pages whose group (as a set of pages) is the same
   in both is reported, and for datasketch the share of pages grouped exactly as constructed.
   rensa is optional: `pip install rensa` to time it; without it that row says it was skipped.
"""

from __future__ import annotations

import sys

if not __package__:  # run as a file, bench/dedup.py would not find the bench and serving packages
    sys.exit("run it from the repository root as a module: python -m bench.dedup --help")

import argparse
import random
import time
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Mapping

import numpy as np

from bench.common import RESULTS_DIR, format_table, header, median, positive_int, write_results
from serving.dedup import (
    DEFAULT_NUM_PERM,
    DEFAULT_THRESHOLD,
    SHINGLE,
    PageBody,
    _link,
    _root,
    comparable,
    group_bodies,
    lsh_bands,
    page_bodies,
    shingle_hashes,
    sketch,
)

ROOT = Path(__file__).resolve().parent.parent
SHINGLE_SIZES = (2, 3, 4, 5, 6, 8)
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
NUM_PERMS = (64, 128, 256)
BODY_SENTENCES = 20
# Pair kinds: must group, in between, must not group.
MUST_GROUP = ("preface", "drop_10pct", "replace_10pct", "edit_every_3rd", "edit_every", "replace_20pct",
              "first_70pct")
BETWEEN = ("share_50pct", "share_33pct")
MUST_NOT = ("one_sentence", "same_topic", "other_topic", "short_same_topic")
# The copies the threshold must keep together, and the pairs it must keep apart: the gap between them decides k.
DECIDING_GROUP = ("preface", "drop_10pct", "replace_10pct", "edit_every_3rd", "edit_every")
DECIDING_APART = MUST_NOT
SHORT_SENTENCES = 4  # a brief notice
PREFACES = ["来源：新华社", "转载自人民网", "编者按：现将有关情况转发如下。", "来源：本网综合"]
POSTSCRIPTS = ["（责任编辑：王敏）", "【纠错】【责任编辑：李娜】", "（本文来源：省政府办公厅）"]


# ----------------------------------------------------------------------------- corpus


def corpus_pools(min_chars: int = 15) -> dict[str, list[str]]:
    """Corpus sentences of min_chars+ characters, cleaned, distinct, pooled by their first label."""
    from bench.common import load_corpus

    pools: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for unit in load_corpus():  # cleaned, in file order
        if len(unit.text) >= min_chars and unit.text not in seen and unit.labels:
            seen.add(unit.text)
            pools[unit.labels[0]].append(unit.text)
    return {label: texts for label, texts in sorted(pools.items()) if len(texts) >= 4 * BODY_SENTENCES}


def _edit(sentence: str, rng: random.Random, filler: str) -> str:
    """One character replaced (a place name, a number, a word a portal rewrites)."""
    at = rng.randrange(len(sentence))
    return sentence[:at] + rng.choice(filler) + sentence[at + 1:]


def make_pairs(pools: dict[str, list[str]], per_kind: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    """per_kind (body, body) pairs of every kind; bodies are sentences joined by newlines."""
    rng = random.Random(seed)
    labels = list(pools)
    filler = "".join(sorted({ch for texts in pools.values() for t in texts for ch in t if "\u4e00" <= ch <= "\u9fff"}))
    pairs: dict[str, list[tuple[str, str]]] = {kind: [] for kind in (*MUST_GROUP, *BETWEEN, *MUST_NOT)}
    n = BODY_SENTENCES
    for _ in range(per_kind):
        label = rng.choice(labels)
        drawn = rng.sample(pools[label], 3 * n + 2 * SHORT_SENTENCES)
        a, spare, b, short = drawn[:n], drawn[n:2 * n], drawn[2 * n:3 * n], drawn[3 * n:]
        other = rng.sample(pools[rng.choice([x for x in labels if x != label])], n)

        def replaced(share: float) -> list[str]:
            out = list(a)
            for at in rng.sample(range(n), round(share * n)):
                out[at] = spare[at]
            return out

        def shared(share: float) -> list[str]:
            keep = set(rng.sample(range(n), round(share * n)))
            return [a[i] if i in keep else b[i] for i in range(n)]

        variants = {
            "preface": [rng.choice(PREFACES), *a, rng.choice(POSTSCRIPTS)],
            "drop_10pct": [s for i, s in enumerate(a) if i not in set(rng.sample(range(n), n // 10))],
            "replace_10pct": replaced(0.1),
            "edit_every_3rd": [_edit(s, rng, filler) if i % 3 == 0 else s for i, s in enumerate(a)],
            "edit_every": [_edit(s, rng, filler) for s in a],
            "replace_20pct": replaced(0.2),
            "first_70pct": a[:round(0.7 * n)],
            "share_50pct": shared(0.5),
            "share_33pct": shared(1 / 3),
            "one_sentence": [a[0], *b[1:]],
            "same_topic": b,
            "other_topic": other,
        }
        for kind, sentences in variants.items():
            pairs[kind].append(("\n".join(a), "\n".join(sentences)))
        pairs["short_same_topic"].append(("\n".join(short[:SHORT_SENTENCES]), "\n".join(short[SHORT_SENTENCES:])))
    return pairs


def exact_jaccard(x: str, y: str, size: int) -> float:
    a, b = set(shingle_hashes(x, size).tolist()), set(shingle_hashes(y, size).tolist())
    return len(a & b) / len(a | b) if a | b else 1.0


def _stats(values: list[float]) -> dict:
    arr = np.asarray(values)
    return {"min": round(float(arr.min()), 3), "p05": round(float(np.percentile(arr, 5)), 3),
            "median": round(float(np.median(arr)), 3), "p95": round(float(np.percentile(arr, 95)), 3),
            "max": round(float(arr.max()), 3)}


def measure_parameters(per_kind: int, seed: int) -> dict:
    pools = corpus_pools()
    pairs = make_pairs(pools, per_kind, seed)
    by_size = {}
    for size in SHINGLE_SIZES:
        kinds = {kind: _stats([exact_jaccard(x, y, size) for x, y in items]) for kind, items in pairs.items()}
        lowest_copy = min(kinds[k]["min"] for k in DECIDING_GROUP)
        highest_apart = max(kinds[k]["max"] for k in DECIDING_APART)
        by_size[size] = {"kinds": kinds, "lowest_copy_that_must_group": lowest_copy,
                         "highest_pair_that_must_not": highest_apart, "gap": round(lowest_copy - highest_apart, 3)}
    grouped: dict = {}
    for num_perm in NUM_PERMS:
        for threshold in THRESHOLDS:
            row = {}
            for kind, items in pairs.items():
                together = 0
                for x, y in items:
                    bodies = {d: PageBody(d, site, None, (), ({"text": text},))
                              for d, site, text in (("a", "a.example", x), ("b", "b.example", y))}
                    groups = group_bodies(bodies, threshold, num_perm)
                    together += groups["a"].group == groups["b"].group
                row[kind] = round(together / len(items), 3)
            grouped[f"{num_perm}/{threshold}"] = row
    return {
        "pools": {label: len(texts) for label, texts in pools.items()},
        "pairs_per_kind": per_kind,
        "body_sentences": BODY_SENTENCES,
        "kinds": {"must_group": MUST_GROUP, "between": BETWEEN, "must_not_group": MUST_NOT,
                  "deciding_group": DECIDING_GROUP, "deciding_apart": DECIDING_APART},
        "exact_jaccard_by_shingle_size": by_size,
        "share_grouped_by_num_perm_and_threshold": grouped,
    }


# ----------------------------------------------------------------------------- synthetic crawl


class Markov:
    """Order-2 character chain over the corpus: new sentences with the corpus's words and phrases."""

    def __init__(self, texts: list[str], rng: random.Random):
        self.rng = rng
        table: dict[str, list[str]] = defaultdict(list)
        for text in texts:
            padded = "^^" + text + "$"
            for i in range(2, len(padded)):
                table[padded[i - 2:i]].append(padded[i])
        self.table = dict(table)

    def sentence(self, length: int = 40) -> str:
        out, state = [], "^^"
        while len(out) < length:
            choices = self.table.get(state)
            ch = self.rng.choice(choices) if choices else "$"
            if ch == "$":
                state = "^^"  # the chain ended a sentence: start another one inside this unit
                continue
            out.append(ch)
            state = state[1] + ch
        return "".join(out) + "。"


def make_crawl(pages: int, seed: int, markov: Markov, body_units: int = 22, furniture_units: int = 8,
               pages_per_site: int = 40, copy_share: float = 0.3) -> tuple[list[dict], list[int]]:
    """Unit records {doc_id, url, index, text} of a crawl (see the module docstring), and for each page the
    page whose article it carries (itself for an original)."""
    rng = random.Random(seed)
    sites = max(2, pages // pages_per_site)
    furniture = [[f"{s}号站 " + markov.sentence(rng.randint(8, 30)) for _ in range(furniture_units)]
                 for s in range(sites)]
    bodies: list[tuple[int, list[str]]] = []  # (site, body units) of every page so far
    article: list[int] = []
    units: list[dict] = []
    for page in range(pages):
        site = rng.randrange(sites)
        if bodies and rng.random() < copy_share:
            source = rng.randrange(len(bodies))
            source_site, source_body = bodies[source]
            if source_site == site:
                site = (site + 1) % sites
            body = [rng.choice(PREFACES)] + [markov.sentence() if rng.random() < 0.1 else u for u in source_body]
            article.append(article[source])
        else:
            body = [markov.sentence() for _ in range(body_units)]
            article.append(page)
        bodies.append((site, body))
        texts = furniture[site][:4] + body + furniture[site][4:]
        units += [{"doc_id": f"p{page}", "url": f"https://www.site{site}.gov.cn/art/{page}.html", "index": i,
                   "text": text} for i, text in enumerate(texts)]
    return units, article


def rensa_link(bodies: Mapping[str, PageBody], threshold: float, num_perm: int = 126,
               bands: int = 42) -> tuple[list[int], dict]:
    """Union-find parents as group_bodies finds them, with rensa sketching the same shingles (its own hash, in
    Rust) and indexing them; candidates confirmed by the same estimated-Jaccard test. Returns (parents, seconds
    of each phase)."""
    from rensa import RMinHash, RMinHashLSH

    seconds = {}
    started = time.perf_counter()
    doc_ids = list(bodies)
    texts = [comparable(bodies[d].body) for d in doc_ids]
    indexed = [i for i, t in enumerate(texts) if len(t) >= SHINGLE]
    shingles = [[texts[i][j:j + SHINGLE] for j in range(len(texts[i]) - SHINGLE + 1)] for i in indexed]
    minhashes = RMinHash.from_token_sets(shingles, num_perm, 1)
    seconds["sketch"] = time.perf_counter() - started
    started = time.perf_counter()
    parent = list(range(len(doc_ids)))
    lsh = RMinHashLSH(threshold, num_perm, bands)
    lsh.insert_many(minhashes, 0)  # key = row in `indexed`
    signatures = np.asarray([m.digest() for m in minhashes], dtype=np.uint32)
    for row, candidates in enumerate(lsh.query_all(minhashes)):
        page = indexed[row]
        root = _root(parent, page)
        rows = sorted(c for c in candidates if c > row and _root(parent, indexed[c]) != root)
        if not rows:
            continue
        similar = (signatures[rows] == signatures[row]).mean(axis=1) >= threshold
        for other, is_copy in zip(rows, similar):
            if is_copy:
                a, b = _root(parent, page), _root(parent, indexed[other])
                if a != b:
                    parent[max(a, b)] = min(a, b)
    seconds["lsh_and_union"] = time.perf_counter() - started
    return parent, seconds


def datasketch_link(bodies: Mapping[str, PageBody], threshold: float,
                    num_perm: int = DEFAULT_NUM_PERM) -> tuple[list[int], dict]:
    """What group_bodies does, phase by phase: (union-find parents, seconds of each phase)."""
    seconds = {}
    started = time.perf_counter()
    sketches, permutations = [], None
    for body in bodies.values():
        minhash = sketch(body.body, num_perm, SHINGLE, permutations)
        if minhash is not None and permutations is None:
            permutations = minhash.permutations
        sketches.append(minhash)
    seconds["sketch"] = time.perf_counter() - started
    started = time.perf_counter()
    parent = _link(sketches, threshold, num_perm)
    seconds["lsh_and_union"] = time.perf_counter() - started
    return parent, seconds


def partition(parent: list[int]) -> list[frozenset]:
    """Each page's group, as the set of pages in it."""
    members: dict[int, set] = defaultdict(set)
    for page in range(len(parent)):
        members[_root(parent, page)].add(page)
    frozen = {root: frozenset(pages) for root, pages in members.items()}
    return [frozen[_root(parent, page)] for page in range(len(parent))]


def pair_scores(found: list[frozenset], truth: list[frozenset]) -> tuple[float, float]:
    """Over pairs of pages: the share of pairs put in one group that are copies, and of copies put in one group."""
    both = sum(len(a & b) - 1 for a, b in zip(found, truth))  # ordered pairs, counted from each page
    found_pairs = sum(len(a) - 1 for a in found)
    true_pairs = sum(len(b) - 1 for b in truth)
    return round(both / found_pairs, 4) if found_pairs else 1.0, round(both / true_pairs, 4) if true_pairs else 1.0


def measure_speed(sizes: list[int], repeats: int, seed: int) -> dict:
    from bench.common import load_corpus

    markov = Markov([u.text for u in load_corpus()], random.Random(seed))
    try:
        import rensa  # noqa: F401

        variants = ("datasketch", "rensa")
    except ImportError:
        variants = ("datasketch",)
    results = {}
    for pages in sizes:
        units, article = make_crawl(pages, seed, markov)
        row: dict = {"pages": pages, "units": len(units),
                     "mean_unit_chars": round(sum(len(u["text"]) for u in units) / len(units), 1)}
        runs: dict[str, list[dict]] = {"page_bodies": [], **{v: [] for v in variants}}
        parents = {}
        for _ in range(repeats):  # interleaved, so a change in load hits every variant alike
            started = time.perf_counter()
            bodies = page_bodies(units)
            runs["page_bodies"].append({"total": time.perf_counter() - started})
            for variant in variants:
                link = datasketch_link if variant == "datasketch" else rensa_link
                parent, seconds = link(bodies, DEFAULT_THRESHOLD)
                runs[variant].append({**seconds, "total": sum(seconds.values())})
                parents[variant] = parent
        for name, timings in runs.items():
            row[name] = {phase: round(median([t[phase] for t in timings]), 3) for phase in timings[0]}
            row[name]["repeats"] = [round(t["total"], 3) for t in timings]
        groups = partition(parents["datasketch"])
        row["groups_datasketch"] = len(set(groups))
        row["pages_in_groups_of_2_plus"] = sum(len(g) > 1 for g in groups)
        truth = partition([article[page] for page in range(pages)])
        row["groups_true"] = len(set(truth))
        row["pages_grouped_as_true"] = round(sum(a == b for a, b in zip(groups, truth)) / pages, 4)
        row["pair_precision"], row["pair_recall"] = pair_scores(groups, truth)
        row["empty_bodies"] = sum(not b.body_units for b in bodies.values())
        if "rensa" in parents:
            other = partition(parents["rensa"])
            row["groups_rensa"] = len(set(other))
            row["same_group_share"] = round(sum(a == b for a, b in zip(groups, other)) / len(groups), 4)
            row["rensa_over_datasketch_grouping"] = round(row["datasketch"]["total"] / row["rensa"]["total"], 2)
        else:
            row["rensa"] = {"status": "skipped: rensa is not installed (pip install rensa)"}
        results[str(pages)] = row
        print(f"{pages} pages timed", file=sys.stderr)
    return results


def print_parameters(parameters: dict) -> None:
    rows = []
    for size, entry in parameters["exact_jaccard_by_shingle_size"].items():
        kinds = entry["kinds"]
        rows.append([size, *(kinds[k]["median"] for k in (*MUST_GROUP, *BETWEEN, *MUST_NOT)),
                     entry["lowest_copy_that_must_group"], entry["highest_pair_that_must_not"], entry["gap"]])
    print("exact Jaccard, median per kind of pair")
    print(format_table(["k", *MUST_GROUP, *BETWEEN, *MUST_NOT, "min copy", "max apart", "gap"], rows))
    print("\nshare of pairs grouped by serving.dedup (num_perm/threshold)")
    print(format_table(["perm/thr", *MUST_GROUP, *BETWEEN, *MUST_NOT],
                       [[key, *row.values()] for key, row in
                        parameters["share_grouped_by_num_perm_and_threshold"].items()]))


def print_speed(speed: dict) -> None:
    rows = []
    for pages, row in speed.items():
        for variant in ("datasketch", "rensa"):
            timing = row.get(variant, {})
            rows.append([pages, variant, row["page_bodies"]["total"], timing.get("sketch"),
                         timing.get("lsh_and_union"), timing.get("total"), row.get(f"groups_{variant}")])
    print("\nseconds (median): page_bodies is shared; sketch + lsh_and_union = grouping")
    print(format_table(["pages", "library", "page_bodies", "sketch", "lsh+union", "grouping", "groups"], rows))


# ----------------------------------------------------------------------------- main


def rensa_package() -> dict:
    """What depending on rensa would mean: version, licence, Python range and the wheel this machine got."""
    try:
        dist = metadata.distribution("rensa")
    except metadata.PackageNotFoundError:
        return {"installed": False}
    wheel = dist.read_text("WHEEL") or ""
    return {"installed": True, "version": dist.version, "license": dist.metadata.get("License"),
            "requires_python": dist.metadata.get("Requires-Python"),
            "requires": dist.requires or [],
            "wheel_tags": [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")],
            "constraint": "RMinHashLSH needs num_perm divisible by num_bands"}


def _versions() -> dict:
    out = {}
    for package in ("datasketch", "rensa", "numpy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dedup", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--pages", default="2000,20000",
                        help="crawl sizes to time, comma-separated (default 2000,20000)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed runs per crawl and variant (default 3)")
    parser.add_argument("--pairs", type=positive_int, default=200,
                        help="pairs per kind for the parameters (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "dedup.json")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.pages.split(",") if x.strip()]
    payload = header("dedup", {"pages": sizes, "repeats": args.repeats, "pairs_per_kind": args.pairs,
                               "seed": args.seed, "threshold": DEFAULT_THRESHOLD, "num_perm": DEFAULT_NUM_PERM,
                               "shingle": SHINGLE,
                               "lsh_bands_rows": lsh_bands(DEFAULT_THRESHOLD, DEFAULT_NUM_PERM)})
    payload["versions"] = {**payload["versions"], **_versions()}
    payload["rensa_package"] = rensa_package()
    started = time.perf_counter()
    payload["parameters"] = measure_parameters(args.pairs, args.seed)
    print(f"parameters measured in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print_parameters(payload["parameters"])
    write_results(args.out, payload)
    payload["speed"] = measure_speed(sizes, args.repeats, args.seed)
    print_speed(payload["speed"])
    write_results(args.out, payload)
    print(f"-> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
