"""A crawl report: one self-contained HTML page that shows what a scored crawl holds.

    python -m serving.batch crawl/ -o scored/units.jsonl --model artifacts/offline-small
    python -m serving.report scored/units.jsonl -o scored/report.html

Reads the scorer's unit file and, when it is there, the page-summary file beside it
(`units.pages.jsonl`). The page (serving/templates/report.html.j2) has no scripts and loads
nothing at view time: charts are inline SVG drawn here, a few lines each — matplotlib's SVG of the
same bar chart is about 7x larger and measures CJK labels with a font that lacks them.
Sections: headline numbers, units and documents per direction, the
share of noise, the pages with units decoded with the wrong codec, directions by source
site (the url's host) and by month (a `date` field of the input when the scorer kept
one, else the first full date printed on the page), and the pages richest in each
direction with their strongest units (the evidence for the direction highlighted when the crawl was
scored with --explain).
"""

from __future__ import annotations

import argparse
import functools
import html
import json
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from runtime.jsonl import read_jsonl

NO_SITE = "(no url)"
NO_DATE = "(no date)"
DATE_FIELDS = ("date", "published", "published_at", "publish_date", "pub_date", "time")
# Dates printed on a page: 2024-03-07, 2024/3/7, 2024.03.07, 2024年3月7日.
_DATE = re.compile(r"(20\d{2}|19\d{2})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})")
_DATE_CUE = re.compile(r"(发布|发表|时间|日期|更新)[^0-9]{0,8}")
# One colour per direction, in taxonomy order; `other` is grey.
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f"]
OTHER_COLOUR = "#bab0ac"


class ScoredFileError(ValueError):
    """The input is not what `python -m serving.batch` writes; the message says what it is instead."""


@dataclass
class Page:
    doc_id: str
    url: str | None = None
    source: str = ""
    date: str | None = None  # YYYY-MM-DD
    date_from: str = ""  # "input" or "page text"
    units: list[dict] = field(default_factory=list)

    @property
    def site(self) -> str:
        if not self.url:
            return NO_SITE
        host = urlparse(self.url if "://" in self.url else "//" + self.url).hostname or NO_SITE
        return host[4:] if host.startswith("www.") else host


@dataclass
class Crawl:
    path: Path
    pages: list[Page]
    directions: list[str]
    other: str
    names: dict[str, str]  # label id -> Chinese name, when the taxonomy is at hand
    model: str | None = None  # the model the scorer names in units.run.json, when it does
    precision: str | None = None

    @property
    def units(self) -> list[dict]:
        return [u for p in self.pages for u in p.units]


# ----------------------------------------------------------------------------- reading


def pages_file(units_path: Path) -> Path:
    """The page-summary file the batch scorer writes beside its unit file."""
    return units_path.with_name(units_path.stem + ".pages.jsonl")


def _records(path: Path) -> list[tuple[int, dict]]:
    out = []
    try:
        for line in read_jsonl(path):
            if line.error:
                raise ScoredFileError(f"{line.where} is not JSON: pass the unit file (JSONL) that "
                                      "python -m serving.batch wrote with -o")
            out.append((line.number, line.record))
    except OSError as exc:
        raise ScoredFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    return out


def _is_unit(record) -> bool:
    return (isinstance(record, dict) and record.get("doc_id") is not None and isinstance(record.get("text"), str)
            and isinstance(record.get("labels"), list) and isinstance(record.get("scores"), dict)
            and all(isinstance(v, (int, float)) for v in record["scores"].values()))


def _iso(year: str, month: str, day: str) -> str | None:
    y, m, d = int(year), int(month), int(day)
    if 1 <= m <= 12 and 1 <= d <= 31:
        return f"{y:04d}-{m:02d}-{d:02d}"
    return None


def _date_of(value) -> str | None:
    if not isinstance(value, str):
        return None
    match = _DATE.search(value)
    return _iso(*match.groups()) if match else None


def page_date(record: dict, units: list[dict]) -> tuple[str | None, str]:
    """(YYYY-MM-DD, where it came from): a date field of the input, else the page's own printed date."""
    for source in (record, units[0] if units else {}):
        for key in DATE_FIELDS:
            found = _date_of(source.get(key))
            if found:
                return found, "input"
    texts = [u["text"] for u in units]
    for text in texts:  # a date right after 发布时间 / 日期 … is the page's own
        for match in _DATE.finditer(text):
            before = text[max(0, match.start() - 12):match.start()]
            if _DATE_CUE.search(before):
                found = _iso(*match.groups())
                if found:
                    return found, "page text"
    for text in texts:
        found = _date_of(text)
        if found:
            return found, "page text"
    return None, ""


def _taxonomy():
    """labels/taxonomy.yaml from the working directory, else beside this package; None when neither loads."""
    from runtime.taxonomy import load_taxonomy

    for path in (Path("labels/taxonomy.yaml"), Path(__file__).resolve().parent.parent / "labels" / "taxonomy.yaml"):
        try:
            return load_taxonomy(path)
        except Exception:  # noqa: BLE001 - names are decoration; the report works without the taxonomy
            continue
    return None


def _label_order(units: list[dict]) -> tuple[list[str], str]:
    """Directions and the `other` label from the scores: the scorer writes directions first, `other` last."""
    keys = list(units[0]["scores"])
    other = keys[-1]
    taxonomy = _taxonomy()  # it names `other`; without it, fall back on the scorer's order
    if taxonomy is not None and taxonomy.other in keys:
        other = taxonomy.other
        keys.sort(key=lambda k: taxonomy.all_labels.index(k) if k in taxonomy.all_labels else len(keys))
    directions = [k for k in keys if k != other]
    for unit in units:
        extra = [label for label in unit["labels"] if label not in keys]
        if extra:
            raise ScoredFileError(f"unit {unit.get('doc_id')}/{unit.get('index')} has labels {extra} that its "
                                  "scores do not name: not python -m serving.batch output")
    return directions, other


def _names(labels: list[str]) -> dict[str, str]:
    taxonomy = _taxonomy()
    return {k: v for k, v in taxonomy.names.items() if k in labels} if taxonomy is not None else {}


def load_scored(path: str | Path) -> Crawl:
    """Read the scorer's unit file (and its page summaries when present)."""
    path = Path(path)
    if path.name.endswith(".pages.jsonl"):
        raise ScoredFileError(f"{path} is the page-summary file; pass the unit file beside it "
                              f"({path.name.removesuffix('.pages.jsonl')}.jsonl)")
    if path.suffix.lower() == ".parquet":
        from serving.output import read_units

        if not path.is_dir():
            raise ScoredFileError(f"{path} is not the Parquet folder python -m serving.batch writes with -o")
        try:
            records = list(enumerate(read_units(path), 1))
        except (OSError, ValueError) as exc:
            raise ScoredFileError(f"cannot read {path}: {exc}") from None
    else:
        records = _records(path)
    if not records:
        raise ScoredFileError(f"{path} holds no scored units: score a crawl first with python -m serving.batch")
    for number, record in records:
        if not _is_unit(record):
            raise ScoredFileError(
                f"{path}:{number} is not a unit record of python -m serving.batch (it needs doc_id, text, labels "
                "and scores); pass the unit file the scorer wrote with -o")
    units = [r for _, r in records]
    directions, other = _label_order(units)

    summaries: dict[str, dict] = {}
    summary_path = pages_file(path)
    if summary_path.is_file():
        for _, record in _records(summary_path):
            if isinstance(record, dict) and record.get("doc_id") is not None:
                summaries[str(record["doc_id"])] = record

    by_doc: dict[str, list[dict]] = defaultdict(list)
    for unit in units:
        by_doc[str(unit["doc_id"])].append(unit)
    pages = []
    for doc_id, doc_units in by_doc.items():  # first-seen order, as scored
        doc_units.sort(key=lambda u: (u.get("index", 0) if isinstance(u.get("index"), int) else 0))
        summary = summaries.get(doc_id, {})
        url = summary.get("url") or doc_units[0].get("url")
        date, date_from = page_date(summary, doc_units)
        pages.append(Page(doc_id, str(url) if url else None, str(summary.get("source", "")), date, date_from,
                          doc_units))
    run = _run_info(path)
    model = run.get("model") or next(
        (str(r[k]) for r in [*summaries.values(), units[0]] for k in ("model", "model_tag") if r.get(k)), None)
    return Crawl(path, pages, directions, other, _names([*directions, other]), model and str(model),
                 run.get("precision"))


def _run_info(units_path: Path) -> dict:
    """The scorer's `<stem>.run.json` (model, precision), when it wrote one."""
    run_path = units_path.with_name(units_path.stem + ".run.json")
    try:
        run = json.loads(run_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return run if isinstance(run, dict) else {}


# ----------------------------------------------------------------------------- numbers


def dominant(page: Page, directions: list[str], other: str) -> list[str]:
    """The page's dominant directions, by the scorer's page-summary rule (runtime.summary)."""
    from runtime.summary import dominant_directions

    return dominant_directions([u["labels"] for u in page.units], directions, other)


def syndication(crawl: Crawl, groups: dict, bodies: dict, top: int) -> dict:
    """Articles found on several pages (serving.dedup groups), most widely carried first, and the sites'
    originals and reposts."""
    pages = {p.doc_id: p for p in crawl.pages}
    members: dict[str, list[str]] = defaultdict(list)
    for doc_id, group in groups.items():
        members[group.group].append(doc_id)
    carried = sorted((g for g in members if len(members[g]) > 1),
                     key=lambda g: (-groups[g].sites, -groups[g].size, g))
    articles = []
    for g in carried[:top]:
        first = pages[groups[g].canonical]
        body = bodies[first.doc_id].body_units
        articles.append({
            "doc_id": first.doc_id, "url": first.url, "site": first.site, "date": first.date,
            "title": (body[0] if body else first.units[0])["text"] if first.units else "",
            "pages": groups[g].size, "sites": groups[g].sites,
            "other_sites": sorted({pages[d].site for d in members[g]} - {first.site}),
            "directions": dominant(first, crawl.directions, crawl.other) if first.units else [],
        })
    return {"articles": len(members), "copies": len(groups) - len(members),
            "syndicated_articles": len(carried), "most_carried": articles}


def statistics(crawl: Crawl, top_pages: int = 5, top_units: int = 3) -> dict:
    """Every number the report shows, as plain data (tests read this)."""
    from serving.dedup import group_bodies, page_bodies

    directions, other = crawl.directions, crawl.other
    units = crawl.units
    noise = sum(1 for u in units if u["labels"] == [other])
    # Copies of one article (a notice reposted by many portals) are one article: directions are counted
    # both by article and by page ("reach").
    bodies = page_bodies(units)
    groups = group_bodies(bodies, dates={p.doc_id: p.date for p in crawl.pages})
    per_direction = {}
    for d in directions:
        pages_with = [p for p in crawl.pages if any(d in u["labels"] for u in p.units)]
        per_direction[d] = {
            "units": sum(1 for u in units if d in u["labels"]),
            "documents": len(pages_with),
            "articles": len({groups[p.doc_id].group for p in pages_with}),
            "dominant_in": sum(1 for p in crawl.pages if d in dominant(p, directions, other)),
        }
    sites: dict[str, dict] = {}
    months: dict[str, dict] = {}
    for page in crawl.pages:
        month = page.date[:7] if page.date else NO_DATE
        for key, table in ((page.site, sites), (month, months)):
            row = table.setdefault(key, {"documents": 0, "units": 0, "noise": 0, "reposts": 0,
                                         **{d: 0 for d in directions}})
            row["documents"] += 1
            # A repost: a copy of an article whose first posting (the group's canonical page) is another page.
            row["reposts"] += groups[page.doc_id].canonical != page.doc_id
            row["units"] += len(page.units)
            row["noise"] += sum(1 for u in page.units if u["labels"] == [other])
            for u in page.units:
                for label in u["labels"]:
                    if label in directions:
                        row[label] += 1
    richest = {}
    for d in directions:
        ranked = sorted(
            (p for p in crawl.pages if any(d in u["labels"] for u in p.units)),
            key=lambda p: (-sum(d in u["labels"] for u in p.units),
                           -sum(d in u["labels"] for u in p.units) / len(p.units), p.doc_id),
        )[:top_pages]
        richest[d] = [
            {
                "doc_id": p.doc_id, "url": p.url, "site": p.site, "date": p.date, "units": len(p.units),
                "direction_units": sum(d in u["labels"] for u in p.units),
                "strongest": [
                    {"index": u.get("index"), "text": u["text"], "score": float(u["scores"].get(d, 0.0)),
                     "labels": u["labels"], "evidence": evidence_spans(u, d)}
                    for u in sorted((u for u in p.units if d in u["labels"]),
                                    key=lambda u: -float(u["scores"].get(d, 0.0)))[:top_units]
                ],
            }
            for p in ranked
        ]
    page_noise = [sum(1 for u in p.units if u["labels"] == [other]) / len(p.units) for p in crawl.pages]
    # Units the scorer flagged as decoding damage (mojibake), per page, most first: pages to fetch again.
    damaged_pages = sorted(
        ({"doc_id": p.doc_id, "url": p.url, "site": p.site, "units": len(p.units),
          "damaged_units": sum(1 for u in p.units if u.get("damaged") is True)} for p in crawl.pages),
        key=lambda row: (-row["damaged_units"], row["doc_id"]))
    return {
        "documents": len(crawl.pages),
        "units": len(units),
        "noise_units": noise,
        "noise_share": noise / len(units) if units else 0.0,
        "multi_label_units": sum(1 for u in units if len(u["labels"]) > 1),
        "per_direction": per_direction,
        "sites": dict(sorted(sites.items(), key=lambda kv: (-kv[1]["units"], kv[0]))),
        "months": dict(sorted(months.items(), key=lambda kv: (kv[0] == NO_DATE, kv[0]))),
        "dated_documents": sum(1 for p in crawl.pages if p.date),
        "dates_from_input": sum(1 for p in crawl.pages if p.date_from == "input"),
        "page_noise_shares": page_noise,
        # None when the scorer predates the check (its records have no `damaged` field).
        "damaged_units": (sum(row["damaged_units"] for row in damaged_pages)
                          if any("damaged" in u for u in units) else None),
        "damaged_pages": [row for row in damaged_pages if row["damaged_units"]],
        "richest": richest,
        "syndication": syndication(crawl, groups, bodies, top=max(10, top_pages)),
        "repost_only_sites": sorted(site for site, row in sites.items() if row["reposts"] == row["documents"]),
    }


def evidence_spans(unit: dict, direction: str) -> list[dict]:
    """The unit's evidence for `direction` (python -m serving.batch --explain), spans that index its text; [] when
    the crawl was scored without --explain or a span does not fit the text (a record edited by hand)."""
    evidence = unit.get("evidence")
    spans = evidence.get(direction) if isinstance(evidence, dict) else None
    text = unit["text"]
    return [span for span in spans or [] if isinstance(span, dict) and isinstance(span.get("start"), int)
            and isinstance(span.get("end"), int) and 0 <= span["start"] < span["end"] <= len(text)]


def highlight(text: str, spans: list[dict]) -> str:
    """HTML of `text` with each evidence span in a <mark> (escaped piece by piece; overlaps are skipped)."""
    parts, cursor = [], 0
    for span in sorted(spans, key=lambda s: s["start"]):
        if span["start"] < cursor:
            continue
        weight = float(span.get("weight") or 0)
        parts.append(_esc(text[cursor:span["start"]]))
        parts.append(f'<mark title="evidence weight {weight:.2f}">{_esc(text[span["start"]:span["end"]])}</mark>')
        cursor = span["end"]
    parts.append(_esc(text[cursor:]))
    return "".join(parts)


# ----------------------------------------------------------------------------- charts (inline SVG)


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def svg_bars(rows: list[tuple[str, float, str]], width: int = 560, unit: str = "") -> str:
    """Horizontal bars: (label, value, colour)."""
    bar_h, gap, left, right = 22, 8, 80, 50
    height = len(rows) * (bar_h + gap) + gap
    peak = max((v for _, v, _ in rows), default=0) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'viewBox="0 0 {width} {height}">']
    for i, (label, value, colour) in enumerate(rows):
        y = gap + i * (bar_h + gap)
        w = (width - left - right) * value / peak
        parts.append(f'<text x="{left - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end" font-size="13">'
                     f'{_esc(label)}</text>'
                     f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"><title>{_esc(label)}: '
                     f'{value:,g}{unit}</title></rect>'
                     f'<text x="{left + w + 6:.1f}" y="{y + bar_h * 0.7:.1f}" font-size="12">{value:,g}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_histogram(values: list[float], bins: int = 10, width: int = 560, height: int = 180) -> str:
    """Pages by their share of noise units, in `bins` equal bins over 0-100%."""
    counts = [0] * bins
    for v in values:
        counts[min(int(v * bins), bins - 1)] += 1
    left, bottom, top = 36, 34, 20
    plot_w, plot_h = width - left - 24, height - bottom - top
    peak = max(counts) or 1
    step = plot_w / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'viewBox="0 0 {width} {height}">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#666"/>']
    for i, count in enumerate(counts):
        h = plot_h * count / peak
        x = left + i * step
        parts.append(f'<rect x="{x + 2:.1f}" y="{top + plot_h - h:.1f}" width="{step - 4:.1f}" height="{h:.1f}" '
                     f'fill="{OTHER_COLOUR}"><title>{i * 100 // bins}-{(i + 1) * 100 // bins}% noise: {count} pages'
                     f'</title></rect>')
        if count:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{top + plot_h - h - 3:.1f}" text-anchor="middle" '
                         f'font-size="11">{count}</text>')
    for i in range(0, bins + 1, 2):
        parts.append(f'<text x="{left + i * step:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                     f'font-size="11">{i * 100 // bins}%</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" font-size="12">'
                 'share of a page\'s units that are noise / off-topic</text></svg>')
    return "".join(parts)


def svg_stacked_columns(columns: list[tuple[str, list[float]]], colours: list[str], width: int = 640,
                        height: int = 220) -> str:
    """One stacked column per period: the units of each direction."""
    left, bottom, top = 40, 40, 20
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max((sum(vals) for _, vals in columns), default=0) or 1
    step = plot_w / max(len(columns), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'viewBox="0 0 {width} {height}">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#666"/>']
    for i, (label, values) in enumerate(columns):
        x = left + i * step + step * 0.15
        y = top + plot_h
        for value, colour in zip(values, colours):
            h = plot_h * value / peak
            if h > 0:
                y -= h
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" '
                             f'fill="{colour}"/>')
        parts.append(f'<text x="{x + step * 0.35:.1f}" y="{top + plot_h + 14}" text-anchor="middle" font-size="11">'
                     f'{_esc(label)}</text>')
        parts.append(f'<text x="{x + step * 0.35:.1f}" y="{y - 3:.1f}" text-anchor="middle" font-size="11">'
                     f'{sum(values):,g}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------- page

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif;
margin:0 auto;max-width:1080px;padding:24px 28px;color:#222;line-height:1.45}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:16px;margin:22px 0 6px}.muted{color:#666;font-size:13px}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:16px 0}.card{border:1px solid #ddd;\
border-radius:6px;padding:10px 16px;
min-width:150px}.card b{display:block;font-size:26px}.card span{color:#555;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border-bottom:1px solid #e5e5e5;padding:4px 8px;
text-align:right;vertical-align:top}th{background:#f6f6f6}td.l,th.l{text-align:left}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.row{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}
ol.units{margin:4px 0 10px;padding-left:22px;font-size:14px}ol.units li{margin:2px 0}
.score{font-variant-numeric:tabular-nums;color:#333;background:#f1f1f1;border-radius:3px;padding:0 4px;font-size:12px}
.page{margin:8px 0 14px}.page .head{font-size:13px}
mark{background:#ffe08a;border-radius:2px;padding:0 1px}
"""


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _label(crawl: Crawl, label: str) -> str:
    zh = crawl.names.get(label)
    return f"{zh} ({label})" if zh else label


def _colour(crawl: Crawl, label: str) -> str:
    return PALETTE[crawl.directions.index(label) % len(PALETTE)] if label in crawl.directions else OTHER_COLOUR


def _table(crawl: Crawl, rows: dict[str, dict], limit: int, reposts: bool = False) -> dict:
    """A by-site or by-month table for the template: the first `limit` rows, each direction's cell with its
    shade within the row, and how many rows were left out; with `reposts`, the row's pages that are copies."""
    shown = []
    for key, row in list(rows.items())[:limit]:
        peak = max([row[d] for d in crawl.directions] + [1])
        shown.append({"key": key, "documents": row["documents"], "units": row["units"], "reposts": row["reposts"],
                      "noise": row["noise"] / row["units"] if row["units"] else 0,
                      "cells": [(row[d], 0.45 * row[d] / peak) for d in crawl.directions]})
    return {"rows": shown, "more": max(0, len(rows) - limit), "reposts": reposts}


@functools.lru_cache(maxsize=1)
def _template():  # noqa: ANN202 - a jinja2.Template; jinja2 is imported on first use
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("serving", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = _pct
    return env.get_template("report.html.j2")


def render(crawl: Crawl, stats: dict, title: str | None = None, max_rows: int = 25) -> str:
    """The report page: serving/templates/report.html.j2 filled with `stats` (from `statistics`)."""
    from markupsafe import Markup

    directions = crawl.directions
    per = stats["per_direction"]
    dated = [(m, row) for m, row in stats["months"].items() if m != NO_DATE]
    charts = {
        "directions": svg_bars([(crawl.names.get(d, d), per[d]["units"], _colour(crawl, d)) for d in directions],
                               width=340),
        "noise": svg_histogram(stats["page_noise_shares"]),
        "months": svg_stacked_columns([(m, [row[d] for d in directions]) for m, row in dated[-24:]],
                                      [_colour(crawl, d) for d in directions]) if len(dated) > 1 else "",
    }
    return _template().render(
        title=title or f"Crawl report: {crawl.path.name}", css=Markup(CSS), crawl=crawl, stats=stats,
        generated=time.strftime("%Y-%m-%d %H:%M"), on_topic=stats["units"] - stats["noise_units"],
        other_colour=OTHER_COLOUR, no_site=NO_SITE, max_rows=max_rows,
        label=lambda label: _label(crawl, label), colour=lambda label: _colour(crawl, label),
        highlight=lambda text, spans: Markup(highlight(text, spans)),
        explained=any("evidence" in u for u in crawl.units),
        charts={name: Markup(svg) for name, svg in charts.items()},
        tables={"sites": _table(crawl, stats["sites"], max_rows, reposts=True),
                "months": _table(crawl, stats["months"], max_rows)},
    )


def write_report(scored: str | Path, out: str | Path, title: str | None = None, top_pages: int = 5) -> dict:
    crawl = load_scored(scored)
    stats = statistics(crawl, top_pages=top_pages)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(render(crawl, stats, title), encoding="utf-8")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.report",
        description="Write one self-contained HTML page (no scripts, no network) describing a crawl scored by "
                    "python -m serving.batch.")
    parser.add_argument("scored", type=Path, help="the unit JSONL written by python -m serving.batch -o")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="HTML file to write (default: SCORED with .html in place of .jsonl)")
    parser.add_argument("--title", default=None, help="page title")
    parser.add_argument("--top", type=int, default=5, help="pages listed per direction (default 5)")
    args = parser.parse_args(argv)
    out = args.output or args.scored.with_suffix(".html")
    try:
        stats = write_report(args.scored, out, args.title, args.top)
    except ScoredFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{stats['documents']} documents, {stats['units']} units ({_pct(stats['noise_share'])} noise) -> {out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
