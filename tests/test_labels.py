"""The label files: coverage of the splitter's output, label validity, duplicates."""

import json
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

import pytest

from training.data import load_examples, read_label_file, seed_unit_records
from training.taxonomy import load_taxonomy
from training.text import clean

SEED_FILE = Path("labels/seed_units.jsonl")
AUTHORED = sorted(Path("labels/authored").glob("*.jsonl"))


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
            assert sum(cue.lower() in t.lower() for t in texts) >= 2, f"cue {cue!r} of {direction} appears in fewer than 2 units"


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
        kind = "exact duplicate" if texts[i] == texts[j] else f"near-duplicate (5-gram Jaccard {jaccard:.2f})"
        problems.append(f"{kind}: {examples[i].ref} ~ {examples[j].ref}: {texts[i][:40]}")
    assert not problems, "\n".join(problems)
