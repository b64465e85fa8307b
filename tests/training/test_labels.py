"""The label files: coverage of the splitter's output, label validity, duplicates."""

import json
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from runtime.taxonomy import load_taxonomy
from runtime.text import clean
from training.data import is_hk_tw, load_examples, read_label_file, register_stats, seed_unit_records

SEED_FILE = Path("labels/seed_units.jsonl")
AUTHORED = sorted(Path("labels/authored").glob("*.jsonl"))
PAGES_DIR = Path("labels/pages")
PAGES_FILE = Path("labels/authored/pages.jsonl")


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy()


def test_taxonomy_has_six_directions_and_other(taxonomy) -> None:
    assert len(taxonomy.directions) == 6
    assert taxonomy.other == "other" and taxonomy.other not in taxonomy.directions
    assert all(taxonomy.cues[d] for d in taxonomy.directions)


def test_seed_file_matches_the_splitter_exactly() -> None:
    """Any change to split_units or clean must come with a review of the seed labels."""
    labelled = [json.loads(line) for line in SEED_FILE.read_text(encoding="utf-8").splitlines()]
    expected = seed_unit_records("seeds")
    keys = ("doc", "unit", "start", "end", "text")
    assert [tuple(r[k] for k in keys) for r in labelled] == [tuple(r[k] for k in keys) for r in expected]


def test_authored_pages_file_matches_the_splitter_exactly() -> None:
    """Authored whole pages are labelled unit by unit, like the seeds: one record per unit of every page."""
    labelled = [json.loads(line) for line in PAGES_FILE.read_text(encoding="utf-8").splitlines()]
    expected = seed_unit_records(PAGES_DIR)
    assert len({r["doc"] for r in expected}) >= 20
    keys = ("doc", "unit", "start", "end", "text")
    assert [tuple(r[k] for k in keys) for r in labelled] == [tuple(r[k] for k in keys) for r in expected]
    for record in labelled:
        assert record["id"] == f"au-page-{record['doc'][:3]}-{record['unit']:03d}"
        assert record["source"] == "authored"


def test_every_seed_unit_has_valid_labels(taxonomy) -> None:
    examples = read_label_file(SEED_FILE, taxonomy)  # raises on unknown labels and other+direction
    assert len(examples) == len(seed_unit_records("seeds"))
    assert all(ex.source == "seed" for ex in examples)


def test_label_checks_reject_bad_files(tmp_path, taxonomy) -> None:
    from training.config import ConfigError

    cases = {
        '{"text": "氢能", "labels": ["future_hydrogen"]}': "unknown label",
        '{"text": "氢能", "labels": ["other", "future_energy"]}': "cannot be combined",
        '{"text": "氢能", "labels": []}': "empty label list",
        '{"text": "氢能"': "not valid JSON",
        '{"labels": ["other"]}': "'text'",
    }
    for line, message in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(line + "\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            read_label_file(path, taxonomy)


def test_authored_files_are_valid_and_marked(taxonomy) -> None:
    assert AUTHORED, "labels/authored/ holds no files"
    ids = Counter()
    for path in AUTHORED:
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            assert record["source"] == "authored", f"{path}: {record.get('id')}"
            ids[record["id"]] += 1
        read_label_file(path, taxonomy)
    assert not [i for i, n in ids.items() if n > 1], "duplicate ids in labels/authored"


def test_authored_corpus_covers_every_direction(taxonomy) -> None:
    examples = [ex for path in AUTHORED for ex in read_label_file(path, taxonomy)]
    counts = Counter(label for ex in examples for label in ex.labels)
    for direction in taxonomy.directions:
        assert counts[direction] >= 150, f"{direction}: only {counts[direction]} authored units"
    assert counts[taxonomy.other] >= 400
    texts = [ex.text for ex in examples]
    for direction in taxonomy.directions:
        for cue in taxonomy.cues[direction]:
            assert sum(cue.lower() in t.lower() for t in texts) >= 2, (
                f"cue {cue!r} of {direction} appears in fewer than 2 units"
            )


def _grams(text: str, n: int = 5) -> frozenset[str]:
    return frozenset(text[i:i + n] for i in range(max(1, len(text) - n + 1)))


def near_duplicates(texts: list[str], threshold: float = 0.8) -> list[tuple[int, int, float]]:
    """Pairs whose character 5-gram Jaccard similarity is >= threshold (candidates via shared grams)."""
    grams = [_grams(t) for t in texts]
    index = defaultdict(list)
    for i, g in enumerate(grams):
        for gram in g:
            index[gram].append(i)
    shared = Counter()
    for members in index.values():
        if len(members) < 200:  # grams shared by hundreds of units are boilerplate, not evidence
            for pair in combinations(members, 2):
                shared[pair] += 1
    pairs = []
    for (i, j), common in shared.items():
        jaccard = common / len(grams[i] | grams[j])
        if jaccard >= threshold:
            pairs.append((i, j, jaccard))
    return pairs


def test_near_duplicate_detector_finds_rewordings() -> None:
    base = "推动氢能制储运加用全产业链协同发展构建新型能源体系"
    assert near_duplicates([base, base + "。", "发展低空经济"]) == [(0, 1, pytest.approx(21 / 22))]


def test_no_duplicates_between_authored_units_or_against_seeds(taxonomy) -> None:
    examples = load_examples([str(SEED_FILE), *map(str, AUTHORED)], taxonomy)
    texts = [clean(ex.text) for ex in examples]
    sources = [ex.source for ex in examples]
    problems = []
    for i, j, jaccard in near_duplicates(texts):
        if sources[i] == sources[j] == "seed":
            continue  # real pages repeat their own headline; that is the data, not a labelling mistake
        on_page = str(PAGES_FILE) in examples[i].ref or str(PAGES_FILE) in examples[j].ref
        if on_page and len(texts[i]) <= 12:
            # whole pages carry the short furniture every site has (相关新闻, 分享); sentences must stay unique
            continue
        kind = "exact duplicate" if texts[i] == texts[j] else f"near-duplicate (5-gram Jaccard {jaccard:.2f})"
        problems.append(f"{kind}: {examples[i].ref} ~ {examples[j].ref}: {texts[i][:40]}")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def register(taxonomy):
    return register_stats([str(SEED_FILE), *map(str, AUTHORED)], taxonomy)


def test_authored_direction_units_are_written_at_the_length_of_real_sentences(register) -> None:
    """Real pages name a direction inside long policy sentences; briefs teach 'topic word first'."""
    lengths = [len(text) for _, text, labels in register["authored"] if labels != ("other",)]
    assert np.median(lengths) >= 50, f"median length of authored direction units is {np.median(lengths):.0f}"


def test_authored_direction_units_come_in_the_spread_of_lengths_real_pages_have(register) -> None:
    """Real direction units run from a four-character caption to a 150-character sentence; authored text
    written at one length teaches the model that length."""
    lengths = [len(text) for _, text, labels in register["authored"] if labels != ("other",)]
    p25, p75 = np.percentile(lengths, [25, 75])
    assert p75 - p25 >= 35, (
        f"authored direction units' lengths have an interquartile range of {p75 - p25:.0f} characters"
    )


def test_most_authored_units_are_other_as_on_real_pages(register) -> None:
    units = register["authored"]
    share = sum(labels == ("other",) for _, _, labels in units) / len(units)
    assert share >= 0.5, f"only {share:.0%} of authored units are other"


def test_authored_units_keep_traditional_script_but_little_hong_kong_or_taiwan(register) -> None:
    from training.data import is_traditional

    units = register["authored"]
    traditional = sum(is_traditional(raw) for raw, _, _ in units) / len(units)
    hk_tw = sum(is_hk_tw(text) for _, text, _ in units) / len(units)
    assert traditional >= 0.25, f"only {traditional:.0%} of authored units are in traditional script"
    assert hk_tw <= 0.10, f"{hk_tw:.0%} of authored units are about Hong Kong or Taiwan"


def test_hong_kong_taiwan_markers() -> None:
    assert is_hk_tw("香港科技园公司") and is_hk_tw("台湾地区") and is_hk_tw("新竹科学园区")
    assert not is_hk_tw("工业互联网平台中接入设备") and not is_hk_tw("粤港澳大湾区")
