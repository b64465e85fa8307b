"""Labelled JSONL files -> examples -> stratified splits -> `datasets.Dataset`."""

from __future__ import annotations

import glob
import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from runtime.errors import ConfigError
from runtime.jsonl import read_jsonl
from runtime.taxonomy import Taxonomy
from runtime.text import clean, split_units

log = logging.getLogger(__name__)

SEED_SOURCE = "seed"


@dataclass(frozen=True)
class Example:
    text: str  # cleaned with runtime.text.clean, exactly as the model sees it
    labels: tuple[str, ...]
    source: str  # "seed" for hand-labelled crawled units; anything else is training-only data
    ref: str  # file:line, for messages
    page: str | None = None  # the record's `doc`: units of one page are held out together


def seed_unit_records(seed_dir: str | Path) -> list[dict]:
    """The units `split_units` makes from every page in `seed_dir`, as label-file records without labels."""
    records = []
    for path in sorted(Path(seed_dir).glob("*.txt")):
        page = path.read_text(encoding="utf-8")
        for unit in split_units(page):
            records.append(
                {"doc": path.stem, "unit": unit.index, "start": unit.start, "end": unit.end, "text": unit.text}
            )
    return records


def read_label_file(path: Path, taxonomy: Taxonomy) -> list[Example]:
    examples = []
    for line in read_jsonl(path):
        where, record = line.where, line.record
        if line.error:
            raise ConfigError(f"{where}: not valid JSON ({line.error})")
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ConfigError(f"{where}: each line needs a string field 'text'")
        labels = record.get("labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ConfigError(f"{where}: 'labels' must be a list of label ids")
        taxonomy.check(labels, where)
        text = clean(record["text"])
        if not text:
            raise ConfigError(f"{where}: text is empty after cleaning")
        source = str(record.get("source", SEED_SOURCE if "doc" in record else "user"))
        page = str(record["doc"]) if record.get("doc") not in (None, "") else None
        examples.append(Example(text, tuple(sorted(labels)), source, where, page))
    return examples


OPTIONAL = "?"  # prefix of a data.label_files pattern that may match no file


def _glob(pattern: str) -> list[str]:
    return sorted(glob.glob(pattern.removeprefix(OPTIONAL)))


def load_examples(patterns: Iterable[str], taxonomy: Taxonomy) -> list[Example]:
    """Read every labelled unit named by the glob patterns; fail loudly on any bad line.

    A pattern that starts with `?` (e.g. `?labels/reviewed/*.jsonl`) is optional: matching no file is fine.
    """
    files: list[Path] = []
    for pattern in patterns:
        matched = _glob(pattern)
        if not matched and not pattern.startswith(OPTIONAL):
            raise ConfigError(f"data.label_files: {pattern!r} matches no file")
        files.extend(Path(m) for m in matched)
    examples = [ex for path in dict.fromkeys(files) for ex in read_label_file(path, taxonomy)]
    if not examples:
        raise ConfigError("no labelled units found in data.label_files")
    return examples


def multi_hot(examples: list[Example], taxonomy: Taxonomy) -> np.ndarray:
    """Rows of 0/1 over the directions; `other` is the all-zero row."""
    index = {label: i for i, label in enumerate(taxonomy.directions)}
    matrix = np.zeros((len(examples), len(taxonomy.directions)), dtype=np.float32)
    for row, ex in enumerate(examples):
        for label in ex.labels:
            if label in index:
                matrix[row, index[label]] = 1.0
    return matrix


def label_counts(examples: list[Example]) -> Counter:
    return Counter(label for ex in examples for label in ex.labels)


def _strat_matrix(examples: list[Example], taxonomy: Taxonomy) -> np.ndarray:
    y = multi_hot(examples, taxonomy)
    other = (y.sum(axis=1) == 0).astype(np.float32)[:, None]
    return np.hstack([y, other])


def _by_text(examples: list[Example]) -> tuple[list[Example], list[list[int]]]:
    """Collapse identical texts so a repeated headline never sits on both sides of a split."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.text, []).append(i)
    keys = list(groups)
    return [examples[groups[k][0]] for k in keys], [groups[k] for k in keys]


def page_groups(examples: list[Example]) -> np.ndarray:
    """A group id per example: the units of one page (`doc`) share one; a unit without a page is grouped
    with the identical texts that have none.

    Identical texts on two pages (a site's menu line) do not join the pages: a crawl of new pages from
    known sites shows the model such lines again, and joining on them would merge whole sites.
    """
    keys = [("page", ex.page) if ex.page is not None else ("text", ex.text) for ex in examples]
    ids = {key: n for n, key in enumerate(dict.fromkeys(keys))}
    return np.array([ids[key] for key in keys], dtype=int)


def _group_folds(examples: list[Example], taxonomy: Taxonomy, k: int, seed: int) -> list[np.ndarray]:
    """K folds of whole groups (`page_groups`), label counts spread as evenly as groups allow.

    With k or fewer groups every group is a fold (leave-one-page-out). Otherwise groups are dealt,
    largest label mass first (ties in seeded random order), to the fold whose label counts stay
    closest to an even share — the greedy multi-label stratification of Sechidis et al. over groups.
    """
    groups = page_groups(examples)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if n_groups < 2:
        raise ConfigError(f"cannot hold out whole pages: the real units come from {n_groups} page(s)")
    y = _strat_matrix(examples, taxonomy)
    group_y = np.zeros((n_groups, y.shape[1]))
    np.add.at(group_y, groups, y)
    rng = np.random.default_rng(seed)
    if n_groups <= k:
        order = rng.permutation(n_groups)
        return [np.flatnonzero(groups == g) for g in order]
    # Rare labels weigh more, so the few units of a rare direction are spread first.
    weights = 1.0 / np.maximum(group_y.sum(axis=0), 1)
    target = group_y.sum(axis=0) / k
    fold_y = np.zeros((k, y.shape[1]))
    fold_size = np.zeros(k)
    members: list[list[int]] = [[] for _ in range(k)]
    ties = rng.random(n_groups)
    for g in sorted(range(n_groups), key=lambda g: (-(group_y[g] * weights).sum(), ties[g])):
        cost = [((np.maximum(fold_y[f] + group_y[g] - target, 0) * weights).sum(), fold_size[f], f) for f in range(k)]
        f = min(cost)[2]
        fold_y[f] += group_y[g]
        fold_size[f] += group_y[g].sum()
        members[f].append(g)
    return [np.flatnonzero(np.isin(groups, m)) for m in members if m]


def kfold_indices(examples: list[Example], taxonomy: Taxonomy, k: int, seed: int, by: str = "page") -> list[np.ndarray]:
    """Test indices of each of K folds: whole pages (`by="page"`) or single units (`by="unit"`).

    By page, a page's units are never split across folds; with K pages or fewer, each page is a
    fold (leave-one-page-out), so the number of folds can be smaller than K. By unit, folds are
    multi-label stratified (iterative stratification) with identical texts kept together.
    """
    if by == "page":
        folds = _group_folds(examples, taxonomy, k, seed)
        if len(folds) < k:
            log.warning("--cv %d: the real units come from %d pages, so each page is one fold (leave-one-page-out, "
                        "%d folds)", k, len(folds), len(folds))
        return folds
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    unique, members = _by_text(examples)
    if len(unique) < k:
        raise ConfigError(f"cannot make {k} folds from {len(unique)} distinct units")
    y = _strat_matrix(unique, taxonomy)
    folds = []
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for _, test in splitter.split(np.zeros(len(unique)), y):
        folds.append(np.array(sorted(i for t in test for i in members[t])))
    return folds


def holdout_pages(examples: list[Example], taxonomy: Taxonomy, fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held-out) indices where the held-out side is whole pages, about `fraction` of the units.

    Of the candidate folds (`kfold_indices` by page with round(1 / fraction) folds), the one that
    holds the most directions wins, then the one whose size is closest to `fraction`.
    """
    folds = _group_folds(examples, taxonomy, max(2, round(1 / fraction)), seed)
    y = multi_hot(examples, taxonomy)
    target = fraction * len(examples)
    held = min(folds, key=lambda f: (-int((y[f].sum(axis=0) > 0).sum()), abs(len(f) - target)))
    return np.setdiff1d(np.arange(len(examples)), held), np.sort(held)


def holdout_indices(examples: list[Example], taxonomy: Taxonomy, fraction: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label stratified split into (rest, held-out) indices, identical texts on one side."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    unique, members = _by_text(examples)
    if len(unique) < 4:
        raise ConfigError(f"too few distinct units ({len(unique)}) to hold out a split")
    y = _strat_matrix(unique, taxonomy)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    rest, held = next(splitter.split(np.zeros(len(unique)), y))
    expand = lambda idx: np.array(sorted(i for t in idx for i in members[t]))  # noqa: E731
    return expand(rest), expand(held)


@dataclass
class Splits:
    train: list[Example]
    val: list[Example]
    test: list[Example]

    def describe(self, taxonomy: Taxonomy) -> str:
        lines = []
        for name in ("train", "val", "test"):
            part = getattr(self, name)
            counts = label_counts(part)
            sources = Counter(ex.source for ex in part)
            per_label = ", ".join(f"{label}={counts.get(label, 0)}" for label in taxonomy.all_labels)
            lines.append(f"{name}: {len(part)} units ({dict(sources)}); {per_label}")
        return "\n".join(lines)


def make_splits(
    seed_units: list[Example],
    extra: list[Example],
    taxonomy: Taxonomy,
    test_idx: np.ndarray | None,
    val_fraction: float,
    test_fraction: float,
    extra_val_fraction: float,
    seed: int,
    split_by: str = "page",
) -> Splits:
    """Train/val/test where the test set holds seed (real crawled) units only.

    With `test_idx` given (a CV fold) those seed units are the test set; otherwise about
    `test_fraction` of the seed units is held out: whole pages (`split_by="page"`) or a
    stratified sample of units (`"unit"`). Validation takes a stratified share of the
    remaining seed units plus a share of the extra data; it serves early stopping and
    threshold tuning, never as the yardstick.
    """
    if test_idx is None:
        holdout = holdout_pages if split_by == "page" else holdout_indices
        rest_idx, test_idx = holdout(seed_units, taxonomy, test_fraction, seed)
    else:
        rest_idx = np.setdiff1d(np.arange(len(seed_units)), test_idx)
    rest = [seed_units[i] for i in rest_idx]
    train_i, val_i = holdout_indices(rest, taxonomy, val_fraction / (1 - test_fraction), seed)
    train = [rest[i] for i in train_i]
    val = [rest[i] for i in val_i]
    if extra:
        if extra_val_fraction > 0:
            extra_train_i, extra_val_i = holdout_indices(extra, taxonomy, extra_val_fraction, seed)
            train += [extra[i] for i in extra_train_i]
            val += [extra[i] for i in extra_val_i]
        else:
            train += extra
    test = [seed_units[i] for i in test_idx]
    for name, part in (("train", train), ("val", val), ("test", test)):
        missing = [label for label in taxonomy.all_labels if label_counts(part).get(label, 0) == 0]
        if missing:
            log.warning("%s split has no example of %s", name, ", ".join(missing))
    return Splits(train, val, test)


def to_dataset(examples: list[Example], taxonomy: Taxonomy, tokenizer, max_length: int, prefix: str = ""):
    """Tokenised `datasets.Dataset` with float multi-hot `labels` (BCE-with-logits wants floats).

    `prefix` (model.text_prefix) goes in front of every text, exactly as `Classifier.encode` does.
    """
    from datasets import Dataset

    dataset = Dataset.from_dict(
        {"text": [prefix + ex.text for ex in examples], "labels": multi_hot(examples, taxonomy).tolist()}
    )
    return dataset.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=["text"],
        desc="tokenising",
    )


def counts_table(patterns: Iterable[str], taxonomy: Taxonomy) -> str:
    """Markdown table of units per label for every label file (a multi-label unit counts for each label)."""
    short = [label.replace("future_", "") for label in taxonomy.all_labels]
    rows = ["| file | units | " + " | ".join(short) + " | multi-label |", "|---|---:|" + "---:|" * (len(short) + 1)]
    total, total_units, total_multi = Counter(), 0, 0
    files = [Path(m) for pattern in patterns for m in _glob(pattern)]
    for path in dict.fromkeys(files):
        examples = read_label_file(path, taxonomy)
        counts = label_counts(examples)
        multi = sum(len(ex.labels) > 1 for ex in examples)
        total.update(counts)
        total_units += len(examples)
        total_multi += multi
        rows.append(f"| {path} | {len(examples)} | "
                    + " | ".join(str(counts.get(label, 0)) for label in taxonomy.all_labels)
                    + f" | {multi} |")
    rows.append(f"| **all** | {total_units} | " + " | ".join(str(total.get(label, 0)) for label in taxonomy.all_labels)
                + f" | {total_multi} |")
    return "\n".join(rows)


# Openings that mark a sentence as part of running news or policy prose rather than a
# headline or a brief (the register table's "connective" column).
CONNECTIVES = ("近年来", "近年來", "同时", "此外", "与此同时", "另外", "他们", "下一步", "为此", "围绕", "目前",
               "据了解", "据介绍", "其中", "记者", "从而", "当前", "今年以来", "随着", "对此", "因此", "截至",
               "此前", "未来", "在此基础上", "据悉", "一方面", "另一方面", "接下来", "总体来看", "近日", "日前",
               "此次", "这几年", "不过", "然而", "值得一提的是", "事实上")
# A sentence is a unit that ends with sentence-final punctuation (and any closing quotes):
# headings, menus and bylines do not, and would dilute the per-sentence columns.
_SENTENCE_END = re.compile(r"[。!?;！？；][”’」』)\"'】》]*$")
# Hong Kong / Taiwan markers, matched in cleaned (simplified) text. 台 names must not
# follow a character that makes them part of another word (平台中, 舞台北).
_HK_TW = re.compile(
    r"香港|港府|特区政府|特首|立法会|九龙|新界|港元|港币|港交所|在港上市|数码港|港闻|医管局|澳门|两岸|"
    r"(?<![平舞站柜灶阳讲吧后烟邢前看展])台(?:湾|北|中|南|东|塑|积电)|高雄|新北市|桃园|新竹|基隆|宜兰|花莲|屏东|嘉义|彰化|"
    r"苗栗|云林|南投|澎湖|金门|马祖|行政院|立法院|经济部|国科会|卫福部|工研院|中研院|新台币|鸿海|联发科|生技(?!术)|全台|北市|县府")
# Where the raw pages of records with a `doc` field live (seed crawls, authored pages).
PAGE_DIRS = ("seeds", "labels/pages")


def is_traditional(raw: str) -> bool:
    """True when OpenCC t2s changes the raw (uncleaned) text: it was written in traditional script."""
    from runtime.text import _t2s

    text = unicodedata.normalize("NFKC", raw)
    return _t2s().convert(text) != text


def is_hk_tw(text: str) -> bool:
    return bool(_HK_TW.search(text))


def _register_row(name: str, records: list[tuple[str, str, tuple[str, ...]]], other: str) -> str:
    """records: (raw text, cleaned text, labels)."""
    n = len(records)
    if not n:
        return f"| {name} | 0 |" + " |" * 10
    lengths = np.array([len(c) for _, c, labels in records if labels != (other,)])
    share = lambda k: f"{100 * k / n:.0f}%"  # noqa: E731
    if lengths.size:
        p25, p75 = np.percentile(lengths, [25, 75])
        dir_cols = (f"{lengths.mean():.0f} / {np.median(lengths):.0f} / {np.percentile(lengths, 90):.0f}",
                    f"{p25:.0f}–{p75:.0f} ({p75 - p25:.0f})", f"{100 * (lengths > 60).mean():.0f}%")
    else:
        dir_cols = ("–", "–", "–")
    sentences = [c for _, c, _ in records if _SENTENCE_END.search(c)]
    commas = sum(c.count(",") for c in sentences) / max(1, len(sentences))
    connective = sum(c.startswith(CONNECTIVES) for c in sentences) / max(1, len(sentences))
    n_other = sum(labels == (other,) for _, _, labels in records)
    trad = sum(is_traditional(r) for r, _, _ in records)
    hktw = sum(is_hk_tw(c) for _, c, _ in records)
    return (f"| {name} | {n} | {lengths.size} | {dir_cols[0]} | {dir_cols[1]} | {dir_cols[2]} | "
            f"{commas:.1f} | {100 * connective:.0f}% | "
            f"{share(n_other)} | {share(trad)} | {share(hktw)} |")


def _raw_text(record: dict) -> str:
    """The unit as written: a page record's slice of its page (its `text` is already cleaned), else `text`."""
    if "doc" in record and "start" in record:
        for folder in PAGE_DIRS:
            page = Path(folder) / f"{record['doc']}.txt"
            if page.exists():
                return page.read_text(encoding="utf-8")[record["start"]:record["end"]]
    return record["text"]


def register_stats(patterns: Iterable[str], taxonomy: Taxonomy) -> dict[str, list[tuple[str, str, tuple[str, ...]]]]:
    """(raw text, cleaned text, labels) of every unit, grouped as `seed`, `authored` and each authored file."""
    groups: dict[str, list] = {"seed": [], "authored": []}
    files = [Path(m) for pattern in patterns for m in _glob(pattern)]
    for path in dict.fromkeys(files):
        examples = read_label_file(path, taxonomy)  # raises on a line that is not JSON
        raws = [_raw_text(line.record) for line in read_jsonl(path)]
        for raw, ex in zip(raws, examples):
            key = "seed" if ex.source == SEED_SOURCE else "authored" if ex.source == "authored" else str(path)
            groups.setdefault(key, []).append((raw, ex.text, ex.labels))
            if ex.source == "authored":
                groups.setdefault(str(path), []).append((raw, ex.text, ex.labels))
    return groups


def register_table(patterns: Iterable[str], taxonomy: Taxonomy) -> str:
    """Markdown table of how the text reads, per group: is authored text written like real pages?

    Direction-unit length (mean / median / p90 characters, quartiles and their range, share over 60),
    commas per sentence
    and share of sentences opening with a connective (a sentence ends with 。！？；), `other`
    share, share of units in traditional script
    (OpenCC t2s changes the raw text) and share about Hong Kong or Taiwan.
    """
    rows = ["| units from | units | direction units | length mean / median / p90 | length p25–p75 (IQR) | > 60 chars "
            "| commas per sentence | sentences opening with a connective | other | traditional | HK/TW |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, records in register_stats(patterns, taxonomy).items():
        if records or name in ("seed", "authored"):
            rows.append(_register_row(name, records, taxonomy.other))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from runtime.taxonomy import load_taxonomy
    from training.config import load_config

    parser = argparse.ArgumentParser(prog="python -m training.data",
                                     description="Validate the label files of a config and print units per label "
                                                 "and file, then how the text reads (length, commas, other share, "
                                                 "script).")
    parser.add_argument("--config", default="configs/offline-small.yaml", help="config whose data.label_files to read")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        taxonomy = load_taxonomy(cfg.data.taxonomy)
        print(counts_table(cfg.data.label_files, taxonomy))
        print()
        print(register_table(cfg.data.label_files, taxonomy))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def split_description(test: list[Example], split_by: str) -> str:
    """How the held-out real units were chosen, for logs and reports."""
    if split_by == "unit":
        return "single units, stratified; units of one page sit on both sides"
    pages = sorted({ex.page or ex.text for ex in test})
    return (f"{len(pages)} whole page{'s' if len(pages) != 1 else ''} "
            f"({', '.join(pages[:4])}{', …' if len(pages) > 4 else ''})")
