"""Would OpenCC's phrase-level conversion (tw2sp, hk2s) clean text better than the character-level t2s?

    python -m bench.opencc_variants      # -> bench/results/opencc-variants.json

For each conversion, `clean` is run with it (then t2s until stable, as `clean` does) and measured by:
- how many labelled units' cleaned text changes against today's `clean`, with examples of what changed;
- on the Hong Kong / Taiwan usage units (`labels/authored/hk_tw_usage.jsonl`): the share of direction units
  whose cleaned text holds a cue word of one of their directions, and the macro F1 of a TF-IDF model trained
  on every other labelled unit (so it has never seen that usage);
- the grouped yardstick: mean macro F1 of the TF-IDF model over page-held-out folds of the real units.
The TF-IDF model stands in for the encoder: it reads the same cleaned text and takes seconds to fit.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
import unicodedata
from dataclasses import replace
from pathlib import Path

import numpy as np

from runtime.taxonomy import load_taxonomy
from training import text as text_module
from training.config import load_config
from training.data import _raw_text, kfold_indices, load_examples, make_splits, multi_hot
from training.evaluate import TfidfBaseline, metrics

VARIANTS = ("t2s", "tw2sp", "hk2s")
HK_TW_FILE = "labels/authored/hk_tw_usage.jsonl"


def cleaner(variant: str):
    """`clean` with `variant` as the first conversion (NFKC, invisible characters and glosses as always)."""
    import opencc

    first = opencc.OpenCC(variant)

    def clean(raw: str) -> str:
        text = unicodedata.normalize("NFKC", raw)
        text = text_module._INVISIBLE.sub("", text)
        text = "".join(ch for ch in text if not text_module._is_dropped_char(ch))
        text = text_module._GLOSS.sub("", text)
        text = text_module._WHITESPACE.sub(" ", text).strip()
        return text_module._simplified(first.convert(text))

    return clean


def changed_words(before: str, after: str) -> list[str]:
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    # One character of context on each side, so 核心→内核 reads as a word, not as "心→" and "→内".
    return [f"{before[max(i1 - 1, 0):i2 + 1]}→{after[max(j1 - 1, 0):j2 + 1]}"
            for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.opencc_variants", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/offline-e5-small.yaml", help="config whose label files to read")
    parser.add_argument("--out", default="bench/results/opencc-variants.json")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    taxonomy = load_taxonomy(cfg.data.taxonomy)
    # Raw texts: a page unit's slice of its page (its `text` field is cleaned already), else `text`.
    base = load_examples(cfg.data.label_files, taxonomy)
    raws = []
    for pattern in cfg.data.label_files:
        for path in sorted(Path().glob(pattern.removeprefix("?"))):
            raws += [(str(path), _raw_text(json.loads(line))) for line in path.read_text(encoding="utf-8").splitlines()
                     if line.strip()]
    assert len(raws) == len(base), "label files changed while reading"
    report: dict = {"command": "python -m bench.opencc_variants " + " ".join(argv or sys.argv[1:]), "variants": {}}
    for variant in VARIANTS:
        started = time.perf_counter()
        clean = cleaner(variant)
        examples = [replace(ex, text=clean(raw)) for ex, (_, raw) in zip(base, raws)]
        changed = [(path, ex0.text, ex.text) for ex0, ex, (path, _) in zip(base, examples, raws) if ex0.text != ex.text]
        by_group: dict[str, int] = {}
        for path, _, _ in changed:
            key = ("seed (real)" if path.endswith("seed_units.jsonl")
                   else path if path == HK_TW_FILE else "other authored")
            by_group[key] = by_group.get(key, 0) + 1
        words: dict[str, int] = {}
        for _, before, after in changed:
            for word in changed_words(before, after):
                words[word] = words.get(word, 0) + 1
        hk = [ex for ex, (path, _) in zip(examples, raws) if path == HK_TW_FILE]
        rest = [ex for ex, (path, _) in zip(examples, raws) if path != HK_TW_FILE]
        direction_units = [ex for ex in hk if ex.labels != (taxonomy.other,)]
        with_cue = sum(any(cue.lower() in ex.text.lower() for label in ex.labels for cue in taxonomy.cues[label])
                       for ex in direction_units)
        real = [ex for ex in rest if ex.source != "authored"]
        authored = [ex for ex in rest if ex.source == "authored"]
        tfidf = TfidfBaseline(seed=cfg.seed).fit(*_train_val(real, authored, taxonomy, cfg), taxonomy)
        hk_f1 = metrics(multi_hot(hk, taxonomy), tfidf.predict([ex.text for ex in hk]), taxonomy)["macro_f1"]
        fold_f1 = []
        for i, test_idx in enumerate(kfold_indices(real, taxonomy, 5, cfg.seed, by="page")):
            splits = make_splits(real, authored + hk, taxonomy, test_idx, cfg.data.val_fraction, 0.2,
                                 cfg.data.authored_val_fraction, cfg.seed + i)
            model = TfidfBaseline(seed=cfg.seed + i).fit(splits.train, splits.val, taxonomy)
            fold_f1.append(metrics(multi_hot(splits.test, taxonomy), model.predict([ex.text for ex in splits.test]),
                                   taxonomy)["macro_f1"])
        report["variants"][variant] = {
            "units_changed_vs_t2s": len(changed), "units_changed_by_group": by_group,
            "most_common_changes": sorted(words.items(), key=lambda kv: -kv[1])[:25],
            "hk_tw_direction_units_with_a_cue": f"{with_cue}/{len(direction_units)}",
            "hk_tw_tfidf_macro_f1_unseen": round(hk_f1, 3),
            "grouped_cv_tfidf_macro_f1_mean": round(float(np.mean(fold_f1)), 3),
            "grouped_cv_tfidf_macro_f1_folds": [round(f, 3) for f in fold_f1],
            "seconds": round(time.perf_counter() - started, 1),
        }
        row = report["variants"][variant]
        print(f"{variant:6s} changed {row['units_changed_vs_t2s']:4d} {by_group}  "
              f"HK/TW cue {row['hk_tw_direction_units_with_a_cue']}"
              f"  HK/TW TF-IDF {row['hk_tw_tfidf_macro_f1_unseen']:.3f}  grouped CV TF-IDF "
              f"{row['grouped_cv_tfidf_macro_f1_mean']:.3f}  "
              f"e.g. {', '.join(w for w, _ in row['most_common_changes'][:8])}")
    Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")
    return 0


def _train_val(real, authored, taxonomy, cfg):
    """All real and authored units but the HK/TW file: (train, validation) as a single run splits them."""
    splits = make_splits(real, authored, taxonomy, np.array([], dtype=int), cfg.data.val_fraction, 0.2,
                         cfg.data.authored_val_fraction, cfg.seed)
    return splits.train, splits.val


if __name__ == "__main__":
    raise SystemExit(main())
