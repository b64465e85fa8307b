"""Human review: pick the units worth a person's minute, take their answers back as labels, audit old labels.

    python -m training.review export scored/units.jsonl -n 200 -o review/crawl.json --model artifacts/offline-small
    python -m training.review import review/project-export.json --name crawl-2026-11
    python -m training.review audit -o review/audit.json

`export` writes four files beside OUT (say `review/crawl.json`):
  crawl.json                 Label Studio tasks (import them into a project), the model's labels as `predictions`
                             and, for a crawl scored with --explain, its evidence as pre-annotated spans
  crawl.label_config.xml     the labelling interface: one multi-choice over the seven labels, and the span
                             labels that show the evidence (the import reads only the choices)
  crawl.instructions.html    the labelling rules for the project's instructions
  crawl.jsonl                the same units for people who label in a text editor: fill in `labels`

`import` reads a Label Studio JSON export (or that edited JSONL) and writes
`labels/reviewed/<name>.jsonl` with provenance; a unit whose text already carries
different labels in another label file is listed, not written. `audit` trains the
TF-IDF baseline in K folds over every labelled unit and lists the units whose given
labels the out-of-fold predictions most doubt (cleanlab's confident learning), as a
review file in the same format as `export`.
"""

from __future__ import annotations

import argparse
import getpass
import glob
import json
import logging
import math
import os
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from runtime.jsonl import read_jsonl
from runtime.logs import setup_logging
from runtime.taxonomy import Taxonomy, load_taxonomy
from runtime.text import clean
from training.config import ConfigError

log = logging.getLogger("training.review")

REVIEWED_DIR = Path("labels/reviewed")
REVIEWED_SOURCE = "reviewed"
DEFAULT_CONFIG = "configs/offline-small.yaml"
FROM_NAME, TO_NAME = "labels", "text"  # the names the labelling config gives its Choices and Text tags
EVIDENCE_NAME = "evidence"  # its Labels tag: the model's evidence spans over the text, one label per direction
DUPLICATE_JACCARD = 0.8  # character 5-gram Jaccard at or above which two units count as near-duplicates
SHINGLE = 5


class ReviewError(ValueError):
    """Bad input for a review command; the message says what to do."""


# ----------------------------------------------------------------------------- shared pieces


@dataclass
class Candidate:
    """One unit proposed for review."""

    text: str
    suggested: list[str]  # the pre-annotation: the model's labels (export) or out-of-fold labels (audit)
    reasons: list[str]
    priority: float
    focus: str  # the direction this unit is mainly about, for "rare directions first"
    meta: dict = field(default_factory=dict)  # doc, url, unit, start, end, given_labels, scores ...
    duplicates: list[str] = field(default_factory=list)  # refs of near-duplicates collapsed into this one


def shingles(text: str, n: int = SHINGLE) -> set[str]:
    return {text[i:i + n] for i in range(max(1, len(text) - n + 1))}


def collapse_near_duplicates(candidates: Sequence[Candidate], limit: int) -> list[Candidate]:
    """Walk candidates in order; a unit too close to an earlier representative joins it instead of being kept.

    Keeps at most `limit` representatives but still counts later duplicates of them.
    """
    kept: list[Candidate] = []
    kept_shingles: list[set[str]] = []
    index: dict[str, list[int]] = defaultdict(list)
    for cand in candidates:
        grams = shingles(cand.text)
        seen: Counter = Counter()
        for gram in grams:
            for i in index.get(gram, ()):
                seen[i] += 1
        match = None
        for i, shared in seen.most_common():
            union = len(grams) + len(kept_shingles[i]) - shared
            if union and shared / union >= DUPLICATE_JACCARD:
                match = i
                break
        if match is not None:
            kept[match].duplicates.append(cand.meta.get("ref", cand.text[:20]))
            continue
        if len(kept) >= limit:
            continue
        kept.append(cand)
        kept_shingles.append(grams)
        for gram in grams:
            index[gram].append(len(kept) - 1)
    return kept


def order_rare_first(candidates: list[Candidate], frequency: dict[str, int], floor: float = 0.15) -> list[Candidate]:
    """Round-robin over focus directions, rarest first; each direction's best units first.

    Units whose priority is under `floor` come only after every direction has run out of better ones.
    """
    groups: dict[str, list[Candidate]] = defaultdict(list)
    low: list[Candidate] = []
    for cand in sorted(candidates, key=lambda c: -c.priority):
        (groups[cand.focus] if cand.priority >= floor else low).append(cand)
    order = sorted(groups, key=lambda d: (frequency.get(d, 0), d))
    out: list[Candidate] = []
    cursors = {d: 0 for d in order}
    while True:
        moved = False
        for d in order:
            if cursors[d] < len(groups[d]):
                out.append(groups[d][cursors[d]])
                cursors[d] += 1
                moved = True
        if not moved:
            break
    return out + low


def shown_label(taxonomy: Taxonomy, names_en: dict[str, str], label: str) -> str:
    """How a label reads in Label Studio (Chinese · English); its choices and span labels carry it."""
    return f"{taxonomy.names.get(label, label)} · {names_en.get(label, label)}"


def label_config(taxonomy: Taxonomy, names_en: dict[str, str] | None = None) -> str:
    """Label Studio labelling config: the model's evidence spans over the unit (one span label per direction),
    a note on why it was picked, one multi-choice over the labels."""
    from xml.sax.saxutils import quoteattr

    from serving.report import PALETTE

    names_en = names_en or {}
    choices = [f"    <Choice value={quoteattr(shown_label(taxonomy, names_en, label))} alias={quoteattr(label)}/>"
               for label in taxonomy.all_labels]
    spans = [f"    <Label value={quoteattr(shown_label(taxonomy, names_en, d))} alias={quoteattr(d)} "
             f"background={quoteattr(PALETTE[i % len(PALETTE)])}/>" for i, d in enumerate(taxonomy.directions)]
    rule = (f"Tick every direction the unit itself substantively talks about, or only "
            f"{taxonomy.names.get(taxonomy.other, taxonomy.other)} ({taxonomy.other}) when it names none of them: "
            f"{taxonomy.other} never goes with a direction. See the instructions for the rules.")
    return "\n".join([
        "<View>",
        f"  <Header value={quoteattr(rule)} size=\"6\"/>",
        # The model's evidence, pre-annotated when the crawl was scored with --explain: context for the
        # reviewer, never read back (the import takes the choices only).
        f"  <Labels name=\"{EVIDENCE_NAME}\" toName=\"{TO_NAME}\" showInline=\"true\">",
        *spans,
        "  </Labels>",
        f"  <Text name=\"{TO_NAME}\" value=\"$text\"/>",
        (f"  <Choices name=\"{FROM_NAME}\" toName=\"{TO_NAME}\" choice=\"multiple\" showInline=\"false\""
         " required=\"true\""),
        "           requiredMessage=\"Pick at least one label (other alone when the unit names no direction).\">",
        *choices,
        "  </Choices>",
        "  <Header value=\"Why this unit was picked\" size=\"6\"/>",
        "  <Text name=\"why\" value=\"$why\"/>",
        "</View>",
        "",
    ])


def instructions_html(taxonomy: Taxonomy) -> str:
    """Short labelling rules for the project's instructions (GUIDELINES.md has the full version)."""
    import html

    rows = "".join(f"<li><b>{html.escape(taxonomy.names.get(d, d))}</b> <code>{d}</code></li>"
                   for d in taxonomy.directions)
    return (
        "<h3>Label the unit on its own</h3>"
        "<p>A unit is one sentence, list item, heading or line of page furniture. Look at the page only to understand "
        "damaged text, never to import a topic the unit does not mention.</p>"
        f"<ul>{rows}</ul>"
        "<p>Tick <b>every</b> direction the unit substantively talks about (names a technology, product, industry or "
        "project of it). Tick <b>only</b> <code>other</code> when it names none: general policy rhetoric, meeting "
        "logistics, industries outside the six, and page furniture (menus, dates, links, copyright) even when it "
        "contains a direction's word. <b><code>other</code> is exclusive: never tick it together with a "
        "direction</b> — the import rejects such answers.</p>"
        "<p>The pre-selected answer is the model's guess; change it freely. The full rules with edge cases are in "
        "<code>labels/GUIDELINES.md</code>.</p>"
    )


def utf16_offset(text: str, index: int) -> int:
    """A Python character offset as Label Studio counts it: in UTF-16 code units (its browser side is JavaScript),
    where a character above U+FFFF takes two."""
    return index + sum(1 for ch in text[:index] if ord(ch) > 0xFFFF)


def evidence_regions(cand: Candidate, shown: dict[str, str]) -> list[dict]:
    """The evidence spans of the suggested directions as Label Studio `labels` regions over the text."""
    evidence = cand.meta.get("evidence") or {}
    regions = []
    for direction in cand.suggested:
        for span in evidence.get(direction) or []:
            start, end = span["start"], span["end"]
            if not (0 <= start < end <= len(cand.text)) or cand.text[start:end] != span["text"]:
                continue  # not this text's span (a record edited by hand): show nothing rather than a wrong one
            regions.append({"from_name": EVIDENCE_NAME, "to_name": TO_NAME, "type": "labels",
                            "value": {"start": utf16_offset(cand.text, start), "end": utf16_offset(cand.text, end),
                                      "text": span["text"], "labels": [shown.get(direction, direction)]},
                            "score": span.get("weight")})
    return regions


def ls_task(cand: Candidate, model_version: str, shown: dict[str, str] | None = None) -> dict:
    """One Label Studio task with the suggestion as a pre-annotation, and the evidence for it as spans when the
    scored units carry evidence (`shown`: label id -> the value its Label tag shows)."""
    meta = cand.meta
    data = {
        "text": cand.text,
        "why": "; ".join(cand.reasons) + (f"; stands for {len(cand.duplicates)} near-duplicate units"
                                          if cand.duplicates else ""),
        "ref": meta.get("ref", ""),
        "doc": meta.get("doc") or "",
        "url": meta.get("url") or "",
        "unit": meta.get("unit"),
        "start": meta.get("start"),
        "end": meta.get("end"),
        "suggested": ", ".join(cand.suggested),
        "given_labels": ", ".join(meta.get("given_labels") or []),
        "duplicates": len(cand.duplicates),
    }
    return {
        "data": data,
        "predictions": [{
            "model_version": model_version,
            "score": round(1.0 - min(cand.priority, 1.0), 4),
            "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                        "value": {"choices": list(cand.suggested)}}, *evidence_regions(cand, shown or {})],
        }],
    }


def editor_line(cand: Candidate) -> dict:
    meta = cand.meta
    return {
        "text": cand.text,
        "labels": [],  # fill in: directions, or ["other"]; lines left empty are not imported
        "suggested": cand.suggested,
        "given_labels": meta.get("given_labels"),
        "why": cand.reasons,
        "ref": meta.get("ref"), "doc": meta.get("doc"), "url": meta.get("url"), "unit": meta.get("unit"),
        "start": meta.get("start"), "end": meta.get("end"), "duplicates": len(cand.duplicates),
    }


def review_paths(out: Path) -> dict[str, Path]:
    stem = out.with_suffix("")
    return {"tasks": out, "config": Path(f"{stem}.label_config.xml"),
            "instructions": Path(f"{stem}.instructions.html"), "jsonl": Path(f"{stem}.jsonl")}


def write_review(out: Path, candidates: list[Candidate], taxonomy: Taxonomy, model_version: str) -> dict[str, Path]:
    if out.suffix.lower() != ".json":
        raise ReviewError(f"-o {out}: the Label Studio task file must end in .json")
    paths = review_paths(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names_en = _english_names(taxonomy)
    shown = {d: shown_label(taxonomy, names_en, d) for d in taxonomy.directions}
    paths["tasks"].write_text(json.dumps([ls_task(c, model_version, shown) for c in candidates], ensure_ascii=False,
                                         indent=1), encoding="utf-8")
    paths["config"].write_text(label_config(taxonomy, names_en), encoding="utf-8")
    paths["instructions"].write_text(instructions_html(taxonomy), encoding="utf-8")
    paths["jsonl"].write_text("".join(json.dumps(editor_line(c), ensure_ascii=False) + "\n" for c in candidates),
                              encoding="utf-8")
    return paths


def _english_names(taxonomy: Taxonomy, path: str = "labels/taxonomy.yaml") -> dict[str, str]:
    try:
        import yaml

        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return {e["id"]: e.get("en", e["id"]) for e in raw.get("labels", [])}
    except Exception:  # noqa: BLE001 - English names are decoration
        return {}


def labelled_files(patterns: Iterable[str], exclude: Path | None = None) -> list[Path]:
    """Label files named by glob patterns; patterns that match nothing are skipped here."""
    files = [Path(m) for pattern in patterns for m in sorted(glob.glob(pattern.lstrip("?")))]
    return [p for p in dict.fromkeys(files) if exclude is None or p.resolve() != exclude.resolve()]


def existing_labels(files: Iterable[Path]) -> dict[str, tuple[tuple[str, ...], str]]:
    """Cleaned text -> (labels, file:line) for every labelled unit in the files (first occurrence wins)."""
    out: dict[str, tuple[tuple[str, ...], str]] = {}
    for path in files:
        for line in read_jsonl(path):  # a line that is not JSON names no unit: skipped
            record = line.record
            if (isinstance(record, dict) and isinstance(record.get("text"), str)
                    and isinstance(record.get("labels"), list)):
                out.setdefault(clean(record["text"]), (tuple(sorted(record["labels"])), line.where))
    return out


def default_label_patterns(config: str) -> list[str]:
    from training.config import load_config

    patterns = list(load_config(config).data.label_files)
    reviewed = f"{REVIEWED_DIR}/*.jsonl"
    if not any(p.lstrip("?") == reviewed for p in patterns):
        patterns.append(reviewed)
    return patterns


# ----------------------------------------------------------------------------- export


def read_units(path: Path) -> tuple[list[dict], str | None]:
    """Unit records of python -m serving.batch and the model they name, if any; one clear error for anything else."""
    from serving.report import ScoredFileError, load_scored

    try:
        crawl = load_scored(path)
    except ScoredFileError as exc:
        raise ReviewError(str(exc)) from None
    return crawl.units, crawl.model


def model_thresholds(model: str) -> tuple[dict[str, float], str]:
    """Direction -> threshold from a training artifact folder or a BentoML model tag, and the model's name."""
    from runtime.artifact import ARTIFACT_FILE, read_artifact_meta
    from runtime.errors import ArtifactError

    path = Path(model)
    if path.is_dir():
        try:
            meta = read_artifact_meta(path, need_weights=False)  # thresholds only
        except ArtifactError as exc:
            raise ReviewError(f"--model: {exc}") from None
        return dict(zip(meta["directions"], meta["thresholds"])), str(path)
    try:
        import bentoml

        stored = bentoml.models.get(model)
    except Exception as exc:  # noqa: BLE001 - bentoml raises NotFound or a tag-format error
        raise ReviewError(f"--model {model!r} is neither an artifact folder nor a model in the BentoML store "
                          f"({type(exc).__name__}); pass the artifact folder or tag the crawl was scored "
                          "with") from None
    meta = json.loads((Path(stored.path) / ARTIFACT_FILE).read_text(encoding="utf-8"))
    return dict(zip(meta["directions"], meta["thresholds"])), str(stored.tag)


def inferred_thresholds(units: list[dict], directions: Sequence[str]) -> dict[str, float]:
    """Thresholds consistent with the scored labels: between the highest score below and the lowest at or above."""
    out = {}
    for d in directions:
        pos = [u["scores"][d] for u in units if d in u["labels"]]
        neg = [u["scores"][d] for u in units if d not in u["labels"]]
        if pos and neg:
            out[d] = (max(neg) + min(pos)) / 2
        elif pos:
            out[d] = min(pos)
        else:
            out[d] = max(0.5, max(neg, default=0.0) + 1e-6)
    return out


def check_thresholds(units: list[dict], thresholds: dict[str, float], other: str, model: str) -> None:
    """Fail when the thresholds do not reproduce the labels in the scored file: it was scored by another model."""
    tol = 1e-5  # scores are written rounded to 6 decimals
    wrong = 0
    for u in units:
        for d, t in thresholds.items():
            p = u["scores"].get(d)
            if p is None:
                raise ReviewError(f"the scored units have no score for {d!r}: they were not scored by {model}")
            if (d in u["labels"] and p < t - tol) or (d not in u["labels"] and p >= t + tol):
                wrong += 1
                break
    if wrong:
        raise ReviewError(f"the thresholds of {model} do not give the labels in the scored file for {wrong} of "
                          f"{len(units)} units: pass the --model the crawl was scored with")


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _cue_hits(text: str, taxonomy: Taxonomy) -> dict[str, str]:
    low = text.lower()
    return {d: next(c for c in taxonomy.cues[d] if c.lower() in low)
            for d in taxonomy.directions if any(c.lower() in low for c in taxonomy.cues[d])}


def export_candidates(units: list[dict], thresholds: dict[str, float], taxonomy: Taxonomy,
                      skip_texts: set[str] | None = None) -> tuple[list[Candidate], dict[str, int]]:
    """Score every unit for review value: closeness to a threshold, disagreement with the cue rules, rarity."""
    from training.evaluate import cue_rules

    directions = list(taxonomy.directions)
    missing = [d for d in directions if d not in thresholds]
    if missing:
        raise ReviewError(f"the model has no threshold for {missing}: it was trained on another taxonomy")
    skip_texts = skip_texts or set()
    frequency = Counter(label for u in units for label in u["labels"] if label in directions)
    pool, seen_texts = [], set(skip_texts)  # one candidate per distinct text, none already labelled
    for u in units:
        if u["text"] not in seen_texts:
            seen_texts.add(u["text"])
            pool.append(u)
    cues = cue_rules([u["text"] for u in pool], taxonomy)
    candidates = []
    for u, cue_row in zip(pool, cues):
        model = {d for d in u["labels"] if d in directions}
        by_cue = {d for d, hit in zip(directions, cue_row) if hit}
        distances = {d: abs(_logit(u["scores"][d]) - _logit(thresholds[d])) for d in directions}
        closest = min(directions, key=lambda d: distances[d])
        uncertainty = math.exp(-distances[closest])  # 1 on the threshold, ~0.05 three logits away
        reasons = [f"p({closest}) = {u['scores'][closest]:.2f}, threshold {thresholds[closest]:.2f}"]
        disagree = sorted(model ^ by_cue, key=directions.index)
        if disagree:
            words = _cue_hits(u["text"], taxonomy)
            cue_only = [f"{d} ({words.get(d, '?')})" for d in disagree if d in by_cue]
            model_only = [d for d in disagree if d not in by_cue]
            if cue_only:
                reasons.append(f"cue rules say {', '.join(cue_only)}, the model does not")
            if model_only:
                reasons.append(f"the model says {', '.join(model_only)} with no cue word in the unit")
        at_stake = {closest, *disagree}
        focus = min(at_stake, key=lambda d: (frequency.get(d, 0), directions.index(d)))
        if frequency.get(focus, 0) <= max(1, 0.05 * len(units)):
            reasons.append(f"rare direction in this crawl: {focus} ({frequency.get(focus, 0)} units)")
        priority = uncertainty + (0.5 if disagree else 0.0)
        ref = f"{u.get('doc_id')}#{u.get('index')}"
        meta = {"ref": ref, "doc": u.get("doc_id"), "url": u.get("url"), "unit": u.get("index"),
                "start": u.get("start"), "end": u.get("end"), "scores": u["scores"], "evidence": u.get("evidence")}
        candidates.append(Candidate(u["text"], list(u["labels"]), reasons, priority, focus, meta))
    return candidates, dict(frequency)


def cmd_export(args: argparse.Namespace) -> int:
    taxonomy = load_taxonomy(args.taxonomy)
    units, recorded = read_units(args.scored)
    directions = list(taxonomy.directions)
    if any(d not in units[0]["scores"] for d in directions):
        raise ReviewError(f"{args.scored} was scored with labels {list(units[0]['scores'])}, not those of "
                          f"{args.taxonomy}")
    model = args.model or recorded  # python -m serving.batch names its model in units.run.json
    if model:
        thresholds, model_version = model_thresholds(model)
        check_thresholds(units, thresholds, taxonomy.other, model_version)
    else:
        thresholds, model_version = inferred_thresholds(units, directions), "scored-file"
        log.warning("no --model: thresholds inferred from the labels in the scored file (pass --model for the "
                    "artifact's own)")
    skip: set[str] = set()
    if not args.keep_labelled:
        skip = set(existing_labels(labelled_files(default_label_patterns(args.config))))
    candidates, frequency = export_candidates(units, thresholds, taxonomy, skip)
    ordered = order_rare_first(candidates, frequency)
    chosen = collapse_near_duplicates(ordered, args.n)
    paths = write_review(args.output, chosen, taxonomy, model_version)
    collapsed = sum(len(c.duplicates) for c in chosen)
    print(f"{len(chosen)} units for review (of {len(units)} scored, {len(units) - len(candidates)} already labelled or "
          f"repeated; {collapsed} near-duplicates collapsed into them) -> {paths['tasks']}, {paths['config']}, "
          f"{paths['instructions']}, {paths['jsonl']}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- import


@dataclass
class Answer:
    text: str
    labels: list[str]
    annotator: str
    time: str
    meta: dict
    where: str  # for messages


def _choices(result: list, taxonomy: Taxonomy, shown_to_id: dict[str, str]) -> list[str]:
    labels: list[str] = []
    for item in result or []:
        if not isinstance(item, dict) or item.get("type") not in (None, "choices"):
            continue
        if item.get("from_name") not in (None, FROM_NAME):
            continue
        for choice in (item.get("value") or {}).get("choices") or []:
            labels.append(shown_to_id.get(choice, choice))
    return labels


def _annotator(annotation: dict, users: dict) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("username") or who.get("id"))
    if who is not None:
        return str(users.get(who, f"label-studio-user-{who}"))
    return "unknown"


def read_label_studio(path: Path, tasks: list, taxonomy: Taxonomy) -> tuple[list[Answer], list[str], int]:
    """Answers from a Label Studio JSON export: the latest submitted annotation per annotator of each task."""
    shown_to_id = {f"{taxonomy.names.get(label, label)} · {n}": label for label, n in _english_names(taxonomy).items()}
    answers, problems, unanswered = [], [], 0
    for position, task in enumerate(tasks, 1):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict) or "text" not in task["data"]:
            raise ReviewError(f"{path}: item {position} is not a Label Studio task with data.text; export the project "
                              "as JSON (not JSON_MIN or CSV)")
        data = task["data"]
        where = f"{path}: task {task.get('id', position)}"
        latest: dict[str, dict] = {}
        for ann in task.get("annotations") or []:
            if not isinstance(ann, dict) or ann.get("was_cancelled"):
                continue
            who = _annotator(ann, {})
            stamp = str(ann.get("updated_at") or ann.get("created_at") or "")
            if who not in latest or stamp >= str(latest[who].get("updated_at") or latest[who].get("created_at") or ""):
                latest[who] = ann
        if not latest:
            unanswered += 1
            continue
        sets = {who: sorted(_choices(ann.get("result"), taxonomy, shown_to_id)) for who, ann in latest.items()}
        if len({tuple(s) for s in sets.values()}) > 1:
            problems.append(f"{where}: annotators disagree ({'; '.join(f'{w}: {s}' for w, s in sets.items())}); "
                            "settle it in Label Studio and export again")
            continue
        labels = next(iter(sets.values()))
        stamp = max(str(a.get("updated_at") or a.get("created_at") or "") for a in latest.values())
        meta = {k: data.get(k) for k in ("doc", "url", "unit", "start", "end", "ref", "suggested")}
        meta["task"] = task.get("id")
        answers.append(Answer(str(data["text"]), labels, ", ".join(sorted(latest)), stamp, meta, where))
    return answers, problems, unanswered


def read_editor_jsonl(path: Path, annotator: str) -> tuple[list[Answer], list[str], int]:
    """Answers from the plain JSONL of `export`, edited by hand: lines with a non-empty `labels` list."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(path.stat().st_mtime))
    answers, problems, unanswered = [], [], 0
    for line in read_jsonl(path):
        where, record = line.where, line.record
        if line.error:
            problems.append(f"{where}: not valid JSON ({line.error})")
            continue
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            problems.append(f"{where}: needs a string field 'text'")
            continue
        labels = record.get("labels")
        if not labels:
            unanswered += 1
            continue
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            problems.append(f"{where}: 'labels' must be a list of label ids")
            continue
        meta = {k: record.get(k) for k in ("doc", "url", "unit", "start", "end", "ref")}
        meta["suggested"] = ", ".join(record.get("suggested") or [])
        answers.append(Answer(record["text"], labels, str(record.get("annotator") or annotator),
                              str(record.get("annotated_at") or stamp), meta, where))
    return answers, problems, unanswered


def import_answers(source: Path, name: str, taxonomy: Taxonomy, label_patterns: list[str], out_dir: Path,
                   annotator: str) -> dict:
    """Write labels/reviewed/<name>.jsonl from a review; returns counts and the lists of conflicts and problems."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ReviewError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (it becomes {out_dir}/<name>.jsonl)")
    try:
        raw = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReviewError(f"cannot read {source}: {exc.strerror or exc}") from None
    stripped = raw.lstrip()
    if stripped.startswith("["):
        try:
            tasks = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ReviewError(f"{source} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
        answers, problems, unanswered = read_label_studio(source, tasks, taxonomy)
    elif stripped.startswith("{"):
        answers, problems, unanswered = read_editor_jsonl(source, annotator)
    else:
        raise ReviewError(f"{source} is neither a Label Studio JSON export (a list of tasks) nor the review JSONL")

    target = out_dir / f"{name}.jsonl"
    existing = existing_labels(labelled_files(label_patterns, exclude=target))
    records, conflicts, same = [], [], 0
    seen: dict[str, list[str]] = {}
    for ans in answers:
        try:
            taxonomy.check(ans.labels, ans.where)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        text = clean(ans.text)
        labels = sorted(ans.labels, key=taxonomy.all_labels.index)
        if text in existing:
            old, where = existing[text]
            if tuple(sorted(labels)) == old:
                same += 1
            else:
                conflicts.append(f"{ans.where}: reviewed as {labels}, but {where} says {list(old)} — kept {where}; "
                                 "edit that file if the review is right")
            continue
        if text in seen:
            if seen[text] != labels:
                problems.append(f"{ans.where}: the same text was reviewed twice with different labels "
                                f"({seen[text]} and {labels})")
            continue
        seen[text] = labels
        meta = ans.meta
        records.append({
            "text": text, "labels": labels, "source": REVIEWED_SOURCE,
            "doc": meta.get("doc") or None, "url": meta.get("url") or None, "unit": meta.get("unit"),
            "start": meta.get("start"), "end": meta.get("end"),
            "annotator": ans.annotator, "annotated_at": ans.time,
            "model_labels": [x.strip() for x in (meta.get("suggested") or "").split(",") if x.strip()],
            "review": source.name, **({"task": meta["task"]} if meta.get("task") is not None else {}),
        })
    out_dir.mkdir(parents=True, exist_ok=True)
    if records:
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        os.replace(tmp, target)
    return {"written": len(records), "target": target, "conflicts": conflicts, "problems": problems,
            "unanswered": unanswered, "already_same": same}


def cmd_import(args: argparse.Namespace) -> int:
    taxonomy = load_taxonomy(args.taxonomy)
    result = import_answers(args.export, args.name, taxonomy, default_label_patterns(args.config), args.out_dir,
                            args.annotator)
    for line in result["conflicts"]:
        print(f"conflict: {line}", file=sys.stderr)
    for line in result["problems"]:
        print(f"skipped: {line}", file=sys.stderr)
    print(f"{result['written']} reviewed units -> {result['target'] if result['written'] else '(nothing written)'}; "
          f"{len(result['conflicts'])} conflicts with existing labels (listed, not written), "
          f"{result['already_same']} already labelled the same, {result['unanswered']} not answered, "
          f"{len(result['problems'])} skipped", file=sys.stderr)
    return 1 if result["problems"] else 0


# ----------------------------------------------------------------------------- audit


def out_of_fold(examples: list, taxonomy: Taxonomy, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold TF-IDF probabilities over the directions and their thresholded label matrix."""
    from training.data import holdout_indices, kfold_indices
    from training.evaluate import TfidfBaseline

    probs = np.zeros((len(examples), len(taxonomy.directions)), dtype=np.float64)
    preds = np.zeros_like(probs)
    for i, test_idx in enumerate(kfold_indices(examples, taxonomy, k, seed, by="unit")):
        rest = [examples[j] for j in np.setdiff1d(np.arange(len(examples)), test_idx)]
        train_i, val_i = holdout_indices(rest, taxonomy, 0.15, seed + i)
        model = TfidfBaseline(seed=seed).fit([rest[j] for j in train_i], [rest[j] for j in val_i], taxonomy)
        texts = [examples[j].text for j in test_idx]
        probs[test_idx] = model.probabilities(texts)
        preds[test_idx] = model.predict(texts)
        log.info("fold %d/%d: %d units", i + 1, k, len(test_idx))
    return probs, preds


def label_issues(given: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(flagged mask, quality score per unit, method) over directions + `other` (1 - max direction probability)."""
    full_given = np.hstack([given, (given.sum(axis=1) == 0)[:, None]]).astype(int)
    full_probs = np.hstack([probs, 1.0 - probs.max(axis=1, keepdims=True)])
    labels = [list(np.flatnonzero(row)) for row in full_given]
    try:
        from cleanlab.multilabel_classification import get_label_quality_scores
        from cleanlab.multilabel_classification.filter import find_label_issues

        # n_jobs=1: cleanlab's default forks a multiprocessing pool, which can hang on joining a child forked
        # from a process that runs other threads (torch, tokenizers, Ray); the audit is seconds anyway.
        flagged = find_label_issues(labels=labels, pred_probs=full_probs, n_jobs=1)
        quality = get_label_quality_scores(labels, full_probs)
        return np.asarray(flagged, dtype=bool), np.asarray(quality), "cleanlab 2 confident learning (multi-label)"
    except ImportError:
        pass
    # The same idea without cleanlab: per label, the average probability the model gives the units that carry it
    # is that label's confidence threshold; a unit is flagged when the model is that confident of the opposite of
    # its given label for some label, and ranked by its least self-confident label.
    pos_t = np.array([full_probs[full_given[:, j] == 1, j].mean() if full_given[:, j].any() else 1.0
                      for j in range(full_given.shape[1])])
    neg_t = np.array([(1 - full_probs[full_given[:, j] == 0, j]).mean() if (full_given[:, j] == 0).any() else 1.0
                      for j in range(full_given.shape[1])])
    missing = (full_given == 0) & (full_probs >= pos_t)
    wrong = (full_given == 1) & ((1 - full_probs) >= neg_t)
    self_conf = np.where(full_given == 1, full_probs, 1 - full_probs)
    return ((missing | wrong).any(axis=1), self_conf.min(axis=1),
            "confident learning (plain numpy; cleanlab not installed)")


def cmd_audit(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.data import load_examples, multi_hot
    from training.evaluate import cue_rules

    cfg = load_config(args.config)
    taxonomy = load_taxonomy(cfg.data.taxonomy)
    patterns = list(args.labels or default_label_patterns(args.config))
    files = labelled_files(patterns)
    if not files:
        raise ReviewError(f"no label file matches {patterns}")
    examples = load_examples([str(p) for p in files], taxonomy)
    directions = list(taxonomy.directions)
    given = multi_hot(examples, taxonomy)
    log.info("%d labelled units from %d files; %d-fold out-of-fold TF-IDF predictions",
             len(examples), len(files), args.k)
    probs, preds = out_of_fold(examples, taxonomy, args.k, cfg.seed)
    flagged, quality, method = label_issues(given, probs)
    cues = cue_rules([ex.text for ex in examples], taxonomy)
    order = [i for i in np.argsort(quality, kind="stable") if flagged[i]]
    if args.sources:
        order = [i for i in order if examples[i].source in args.sources]
    candidates = []
    for i in order:
        ex = examples[i]
        suggested = [d for d, hit in zip(directions, preds[i]) if hit] or [taxonomy.other]
        given_labels = list(ex.labels)
        reasons = [f"given {given_labels} in {ex.ref}, out-of-fold TF-IDF says {suggested}"]
        for j, d in enumerate(directions):
            if given[i, j] != (probs[i, j] >= 0.5):
                reasons.append(f"p({d}) = {probs[i, j]:.2f} although it is {'given' if given[i, j] else 'not given'}")
        cue_set = [d for d, hit in zip(directions, cues[i]) if hit] or [taxonomy.other]
        reasons.append(f"cue rules say {cue_set}")
        reasons.append(f"label quality {quality[i]:.3f} ({method})")
        meta = {"ref": ex.ref, "doc": None, "url": None, "given_labels": given_labels}
        candidates.append(Candidate(ex.text, suggested, reasons, 1.0 - float(quality[i]), suggested[0], meta))
    chosen = collapse_near_duplicates(candidates, args.n)
    paths = write_review(args.output, chosen, taxonomy, f"audit-tfidf-oof-{args.k}fold")
    print(f"{int(flagged.sum())} of {len(examples)} labelled units look mislabelled ({method}); the {len(chosen)} "
          f"most likely -> {paths['tasks']}, {paths['jsonl']} (config {paths['config']})", file=sys.stderr)
    for cand in chosen[: args.show]:
        print(f"  {cand.meta['ref']}: {cand.text[:60]}\n    " + "\n    ".join(cand.reasons), file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.review",
                                     description="Send units to human review and take the answers back as labels.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"config whose data.label_files are the existing labels (default {DEFAULT_CONFIG})")
    common.add_argument("--taxonomy", default="labels/taxonomy.yaml",
                        help="label scheme (default labels/taxonomy.yaml)")

    exp = sub.add_parser("export", parents=[common], help="pick the units of a scored crawl most worth reviewing",
                         description="Write Label Studio tasks (with the model's labels as predictions), a labelling "
                                     "config, instructions and a plain JSONL for the units most worth a human's "
                                     "minute: closest to a threshold, where model and cue rules disagree, rare "
                                     "directions first, near-duplicates collapsed.")
    exp.add_argument("scored", type=Path, help="unit JSONL written by python -m serving.batch")
    exp.add_argument("-n", type=int, default=200, help="how many units (default 200)")
    exp.add_argument("-o", "--output", type=Path, required=True, help="Label Studio task file to write (.json)")
    exp.add_argument("--model", default=None,
                     help="artifact folder or BentoML tag the crawl was scored with, for its thresholds "
                          "(default: the model named in the scorer's units.run.json, else thresholds inferred "
                          "from the scored labels)")
    exp.add_argument("--keep-labelled", action="store_true",
                     help="also propose units whose text already has labels (default: skip them)")

    imp = sub.add_parser("import", parents=[common], help="turn a Label Studio export or the edited JSONL into labels",
                         description="Write labels/reviewed/NAME.jsonl (source 'reviewed', with provenance). Units "
                                     "whose text already has other labels are listed as conflicts, not written.")
    imp.add_argument("export", type=Path, help="Label Studio JSON export, or the review JSONL edited by hand")
    imp.add_argument("--name", required=True, help="name of the reviewed label file (labels/reviewed/NAME.jsonl)")
    imp.add_argument("--out-dir", type=Path, default=REVIEWED_DIR,
                     help=f"folder to write into (default {REVIEWED_DIR})")
    imp.add_argument("--annotator", default=None,
                     help="annotator for JSONL lines without one (default: your user name)")

    aud = sub.add_parser("audit", parents=[common], help="list labelled units that are most likely mislabelled",
                         description="Cross-validated out-of-fold TF-IDF predictions over every labelled unit, "
                                     "confident learning (cleanlab) to find likely label errors, written as a "
                                     "review file.")
    aud.add_argument("-o", "--output", type=Path, required=True, help="Label Studio task file to write (.json)")
    aud.add_argument("-n", type=int, default=100, help="how many units at most (default 100)")
    aud.add_argument("-k", type=int, default=5, help="folds (default 5)")
    aud.add_argument("--labels", nargs="+", default=None,
                     help="label files or globs to audit (default: the config's plus labels/reviewed/*.jsonl)")
    aud.add_argument("--sources", nargs="+", default=None, help="only list units of these sources (e.g. seed reviewed)")
    aud.add_argument("--show", type=int, default=10, help="print the evidence for this many (default 10)")
    args = parser.parse_args(argv)
    if getattr(args, "n", 1) < 1:
        parser.error("-n must be positive")
    if args.command == "import" and not args.annotator:
        args.annotator = os.environ.get("FIC_ANNOTATOR") or getpass.getuser()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        return {"export": cmd_export, "import": cmd_import, "audit": cmd_audit}[args.command](args)
    except (ReviewError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
