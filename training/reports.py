"""The two Markdown reports of a training run: report.md of a single run and of a `--cv K` run.

The page text lives in Jinja2 templates (training/templates/); the tables and verdicts come from
training/evaluate.py.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.taxonomy import Taxonomy
from runtime.text import PREPROCESSING_VERSION
from training.config import Config
from training.data import Example, Splits, split_description
from training.evaluate import (
    ENCODER,
    FROZEN,
    FUSION,
    MODEL,
    TFIDF,
    decision_markdown,
    mean_std,
    per_label_table,
    summary_table,
    verdict,
)
from training.model import SCRATCH

if TYPE_CHECKING:
    import jinja2

    from training.train import FitResult

FUSION_NOTE = f"""`{FUSION}` is not a baseline but the model and TF-IDF together: the mean of their probabilities,
with thresholds set by the model's rule. Where it beats both, they err on different units; `model.tfidf_fusion: true`
serves it."""
ENCODER_NOTE = f"""The `model` row is the served model (`model.tfidf_fusion`): the mean of the encoder's and a \
TF-IDF model's
probabilities (the TF-IDF half is trained like the baseline), with the thresholds in `thresholds.json` set on that mean.
`{ENCODER}` is its encoder half with thresholds of its own (same rule), for comparison; not a baseline."""
FROZEN_NOTE = """A fourth system, logistic regression on the pretrained encoder's frozen mean-pooled vectors
(before fine-tuning), shows what fine-tuning adds."""
NO_FROZEN_NOTE = """The frozen-encoder baseline (what fine-tuning adds) is in `--cv` reports, or here with \
`--frozen-baseline`."""


@functools.lru_cache(maxsize=None)
def _template(name: str) -> "jinja2.Template":
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("training", "templates"), autoescape=False,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(name)


def _scratch_warning(cfg: Config) -> str:
    if cfg.model.name_or_path != SCRATCH:
        return ""
    return ("\n> This model was trained from random weights with a character vocabulary built from our own text. "
            "It is smoke-test grade: it proves the pipeline end to end, not the accuracy a pretrained Chinese BERT "
            "(configs/bert-base-chinese.yaml) would reach.\n")


def _system_note(systems: Any) -> str:
    return FUSION_NOTE if FUSION in systems else ENCODER_NOTE if ENCODER in systems else ""


def single_report(cfg: Config, taxonomy: Taxonomy, fitted: "FitResult", splits: Splits, results: dict,
                  precision: str) -> str:
    """report.md of a single run: data, headline and per-label tables on the test split, thresholds."""
    clf = fitted.classifier
    return _template("single_report.md.j2").render(
        cfg=cfg, fitted=fitted, precision=precision, preprocessing_version=PREPROCESSING_VERSION,
        cache_note=(f" (after {fitted.frozen_cache_seconds:.0f} s computing the frozen layers once per unit)"
                    if fitted.frozen_cache_seconds else ""),
        precision_line=f"\nTraining {fitted.precision_choice.describe()}.\n" if fitted.precision_choice else "",
        scratch_warning=_scratch_warning(cfg),
        test_split=split_description(splits.test, cfg.data.split_by), test_units=len(splits.test),
        baseline_note=(FROZEN_NOTE if FROZEN in results else NO_FROZEN_NOTE if cfg.model.name_or_path != SCRATCH
                       else ""),
        system_note=_system_note(results), data=splits.describe(taxonomy), summary_table=summary_table(results),
        verdict=verdict(results, MODEL, not_baselines=[FUSION, ENCODER]),
        per_label_table=per_label_table(results, taxonomy),
        thresholds=", ".join(f"`{d}` {t:.2f}" for d, t in zip(clf.directions, clf.thresholds)),
    )


def cv_report(cfg: Config, taxonomy: Taxonomy, k: int, real: list[Example], authored: list[Example],
              fold_results: dict[str, list[dict]], folds: list[np.ndarray], decision: dict | None = None) -> str:
    """report.md of a `--cv K` run: mean ± std over folds per arm and system, the decision table, per label."""
    rows = ["| training data | system | micro F1 | macro F1 | macro F1 (directions) | exact match |",
            "|---|---|---:|---:|---:|---:|"]
    for arm, arm_folds in fold_results.items():
        for system in arm_folds[0]:
            cells = [mean_std([f[system][key] for f in arm_folds])
                     for key in ("micro_f1", "macro_f1", "macro_f1_directions", "exact_match")]
            rows.append(f"| {arm} | {system} | " + " | ".join(cells) + " |")
    main_arm = next(iter(fold_results))
    systems = list(fold_results[main_arm][0])
    per_label = ["| label | folds with it | " + " | ".join(f"{s} F1" for s in systems) + " |",
                 "|---|---:|" + "---:|" * len(systems)]
    for label in taxonomy.all_labels:
        # A page held out whole may hold no unit of a direction: such a fold says nothing about it.
        folds_with = [f for f in fold_results[main_arm] if f[systems[0]]["per_label"][label]["support"] > 0]
        cells = [mean_std([f[s]["per_label"][label]["f1"] for f in folds_with]) if folds_with else "–"
                 for s in systems]
        per_label.append(f"| {label} | {len(folds_with)} | " + " | ".join(cells) + " |")
    means = {s: {"macro_f1": float(np.mean([f[s]["macro_f1"] for f in fold_results[main_arm]]))} for s in systems}
    gain = ""
    if len(fold_results) == 2:
        with_authored, real_only = list(fold_results)
        lines = []
        for system in [s for s in (MODEL, TFIDF) if s in systems]:
            a = np.mean([f[system]["macro_f1"] for f in fold_results[with_authored]])
            b = np.mean([f[system]["macro_f1"] for f in fold_results[real_only]])
            lines.append(f"- {system}: {b:.3f} → {a:.3f} ({a - b:+.3f})")
        gain = (f"\nAdding the {len(authored)} authored units changes mean macro F1 on held-out real units:\n"
                + "\n".join(lines) + "\n")
    n = len(folds)
    if cfg.data.split_by == "page":
        pages = len({ex.page or ex.text for ex in real})
        how = (f"grouped by page (`data.split_by: page`): each of the {pages} pages sits whole in one fold"
               + (", one page per fold (leave-one-page-out)" if n == pages else ", folds balanced by label as far as "
                  "whole pages allow")
               + " (a line repeated on several pages, such as a site's menu, may sit on both sides, as it "
               "does when new pages of known sites are scored)")
    else:
        how = ("by single units (`data.split_by: unit`, multi-label stratified, identical texts kept in one fold): "
               "units of one page sit in several folds, so a fold is scored on pages it has partly trained on")
    return _template("cv_report.md.j2").render(
        cfg=cfg, k=k, n=n, real_units=len(real), authored_units=len(authored), how=how,
        preprocessing_version=PREPROCESSING_VERSION, scratch_warning=_scratch_warning(cfg),
        headline="\n".join(rows), gain=gain, main_arm=main_arm,
        verdict=(verdict(means, MODEL, not_baselines=[FUSION, ENCODER]) if MODEL in means
                 else "Baselines only (--baselines-only): no model was trained."),
        system_note=_system_note(means), decision=decision_markdown(decision) if decision else "",
        per_label="\n".join(per_label),
    )
