"""The crawl report: numbers from a scored crawl, errors on other files, and a real headless browser opening it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.report import write_report

CHROMIUM = os.environ.get("FIC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
HOSTS = ["https://www.henan.example.cn/news/1.html", "https://gxy.example.com/a/2.html", "http://tibet.example.cn/3",
         "https://www.henan.example.cn/news/4.html", None]


def score_seed_crawl(artifact: Path, out_dir: Path) -> Path:
    """The five seed pages as a JSONL crawl (with urls, one without), scored by the batch CLI."""
    crawl = out_dir / "crawl.jsonl"
    with crawl.open("w", encoding="utf-8") as handle:
        for path, url in zip(sorted(Path("seeds").glob("*.txt")), HOSTS):
            handle.write(json.dumps({"id": path.stem, "url": url, "text": path.read_text(encoding="utf-8")},
                                    ensure_ascii=False) + "\n")
    out = out_dir / "scored" / "units.jsonl"
    result = subprocess.run([sys.executable, "-m", "serving.batch", str(crawl), "-o", str(out), "--model",
                             str(artifact), "--precision", "fp32", "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def scored(tiny_artifact, tmp_path_factory) -> Path:
    return score_seed_crawl(tiny_artifact, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def report(scored) -> tuple[Path, dict]:
    out = scored.parent / "report.html"
    return out, write_report(scored, out)


def test_numbers_match_the_scored_units(scored, report) -> None:
    _, stats = report
    units = [json.loads(line) for line in scored.read_text(encoding="utf-8").splitlines()]
    other = list(units[0]["scores"])[-1]
    assert stats["documents"] == 5
    assert stats["units"] == len(units) == 238  # every unit of the seed pages
    assert stats["noise_units"] == sum(u["labels"] == [other] for u in units)
    for direction, row in stats["per_direction"].items():
        assert row["units"] == sum(direction in u["labels"] for u in units)
        assert row["documents"] == len({u["doc_id"] for u in units if direction in u["labels"]})
    assert stats["sites"]["henan.example.cn"]["documents"] == 2  # www. dropped, two pages on one host
    assert stats["sites"]["(no url)"]["documents"] == 1
    assert sum(row["units"] for row in stats["sites"].values()) == 238
    # Four of the five seed pages print their date (发布时间 2024-03-07 and so on).
    assert stats["dated_documents"] >= 4 and "2024-03" in stats["months"]


def test_page_date_prefers_a_marked_date() -> None:
    from serving.report import page_date

    units = [{"text": "相关新闻 2023年1月2日"}, {"text": "发布时间:2024-03-07 14:52:00来源: 河北日报"}]
    assert page_date({}, units) == ("2024-03-07", "page text")
    assert page_date({"date": "2025/6/1"}, units) == ("2025-06-01", "input")
    assert page_date({}, [{"text": "无日期"}]) == (None, "")


def test_not_scorer_output_is_one_clear_error(tmp_path, scored) -> None:
    bad = tmp_path / "labels.jsonl"
    bad.write_text('{"text": "a", "labels": ["other"]}\n', encoding="utf-8")
    for path, fragment in [(bad, "is not a unit record of python -m serving.batch"),
                           (Path("README.md"), "is not JSON"),
                           (scored.with_name("units.pages.jsonl"), "is the page-summary file")]:
        result = subprocess.run([sys.executable, "-m", "serving.report", str(path), "-o", str(tmp_path / "r.html")],
                                capture_output=True, text=True)
        assert result.returncode == 2
        assert fragment in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_report_is_self_contained(report) -> None:
    page = report[0].read_text(encoding="utf-8")
    assert "<script" not in page
    for needle in ("src=\"http", "href=\"//", "@import", "url(http"):
        assert needle not in page
    assert page.count("<svg") >= 3  # directions, noise histogram, months


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}: apt-get install -y chromium "
                                                         "(.ci/run installs it)")
def test_report_opens_in_a_headless_browser(report, scored) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install -e '.[report]'")
    path, stats = report
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda req: requests.append(req.url))
        page.goto(path.resolve().as_uri(), wait_until="load")
        stat = lambda key: page.locator(f".card [data-stat='{key}']").inner_text()  # noqa: E731
        assert stat("documents") == "5"
        assert stat("units") == f"{stats['units']:,}"
        assert stat("noise-share") == f"{100 * stats['noise_share']:.1f}%"
        for direction, row in stats["per_direction"].items():
            cell = page.locator(f"td[data-direction='{direction}'][data-stat='units']")
            assert cell.inner_text() == str(row["units"])
        assert page.locator("svg").count() >= 3
        assert page.locator("svg rect").first.bounding_box()["width"] > 0
        text = page.inner_text("body")
        assert "henan.example.cn" in text and "By date" in text and "2024-03" in text
        browser.close()
    assert errors == []
    assert all(url.startswith("file://") for url in requests), requests  # nothing fetched at view time



def _unit(doc_id: str, index: int, text: str, labels: list[str], damaged: bool) -> dict:
    scores = {"future_energy": 0.9 if "future_energy" in labels else 0.1, "other": 0.1 if labels != ["other"] else 0.9}
    return {"doc_id": doc_id, "url": None, "index": index, "start": 0, "end": len(text), "text": text,
            "labels": labels, "top_label": labels[0], "scores": scores, "truncated": False, "damaged": damaged}


def test_report_counts_damaged_units_per_page(tmp_path) -> None:
    units = [_unit("clean", 0, "发展氢能产业。", ["future_energy"], False),
             _unit("mojibake", 0, "鍙戝睍鏂拌川鐢熶骇鍔�", ["other"], True),
             _unit("mojibake", 1, "¹ú¼Ò·¢Õ¹", ["other"], True),
             _unit("mojibake", 2, "发展氢能产业。", ["future_energy"], False)]
    scored = tmp_path / "units.jsonl"
    scored.write_text("".join(json.dumps(u, ensure_ascii=False) + "\n" for u in units), encoding="utf-8")
    out = tmp_path / "report.html"
    stats = write_report(scored, out)
    assert stats["damaged_units"] == 2
    assert stats["damaged_pages"] == [{"doc_id": "mojibake", "url": None, "site": "(no url)", "units": 3,
                                       "damaged_units": 2}]
    page = out.read_text(encoding="utf-8")
    assert 'data-doc="mojibake" data-stat="damaged-units">2<' in page and 'data-doc="clean"' not in page

    # Records from before the check carry no field: the report says so instead of claiming none.
    scored.write_text("".join(json.dumps({k: v for k, v in u.items() if k != "damaged"}, ensure_ascii=False) + "\n"
                              for u in units), encoding="utf-8")
    assert write_report(scored, out)["damaged_units"] is None
    assert "predate the damage check" in out.read_text(encoding="utf-8")


def test_dominant_directions_are_capped_and_ranked() -> None:
    # A policy page whose units each name several directions: every direction passes the 25% share.
    from runtime.decide import Prediction
    from runtime.summary import MAX_DOMINANT, summarize
    from serving.report import Page, dominant

    directions = ["a", "b", "c", "d", "e", "f"]
    rows = [["a", "b", "c", "d", "e", "f"], ["a", "b", "c", "d", "e"], ["a", "b", "c", "d"], ["f", "e", "d"]]
    predictions = [Prediction(labels, labels[0], {}) for labels in rows]
    summary = summarize(predictions, [*directions, "other"], "other")
    # d labels 4 units; a, b, c and e 3 each (ties in taxonomy order); f 2.
    assert MAX_DOMINANT == 3 and summary["dominant_directions"] == ["d", "a", "b"]
    page = Page("p", units=[{"labels": labels} for labels in rows])
    assert dominant(page, directions, "other") == summary["dominant_directions"]  # the report uses the same rule


@pytest.fixture(scope="module")
def syndicated(tiny_artifact, tmp_path_factory) -> tuple[Path, Path]:
    """A generated crawl (8 sites, 30% of articles reposted on 2-7 other sites) scored and reported."""
    from bench.synthetic_crawl import generate, write

    folder = tmp_path_factory.mktemp("syndicated")
    crawl, truth = write(generate(120, 8, 0.3, seed=0), folder)
    out = folder / "scored" / "units.jsonl"
    result = subprocess.run([sys.executable, "-m", "serving.batch", str(crawl), "-o", str(out), "--model",
                             str(tiny_artifact), "--precision", "fp32", "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    write_report(out, folder / "report.html")
    return folder / "report.html", truth


def test_report_counts_articles_once_and_their_reach(syndicated) -> None:
    from collections import defaultdict

    path, truth = syndicated
    stats = write_report(path.parent / "scored" / "units.jsonl", path.with_name("again.html"))
    pages = [json.loads(line) for line in truth.read_text(encoding="utf-8").splitlines()]
    bodies = defaultdict(list)
    for page in pages:
        bodies[page["body"]].append(page)
    syn = stats["syndication"]
    assert syn["articles"] == len(bodies) and syn["copies"] == len(pages) - len(bodies)
    assert syn["syndicated_articles"] == sum(len(copies) > 1 for copies in bodies.values())
    widest = max(bodies.values(), key=lambda copies: (len({p["site"] for p in copies}), len(copies)))
    top = syn["most_carried"][0]
    assert (top["pages"], top["sites"]) == (len(widest), len({p["site"] for p in widest}))
    assert top["doc_id"] == next(p["id"] for p in pages if p["original"] and p["body"] == widest[0]["body"])
    for row in stats["per_direction"].values():
        assert row["articles"] <= row["documents"]
    reposts = defaultdict(int)
    for page in pages:
        reposts[page["site"].removeprefix("www.")] += not page["original"]
    assert {site: row["reposts"] for site, row in stats["sites"].items()} == dict(reposts)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}: apt-get install -y chromium "
                                                         "(.ci/run installs it)")
def test_syndication_numbers_in_a_headless_browser(syndicated) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install -e '.[report]'")
    path, truth = syndicated
    pages = [json.loads(line) for line in truth.read_text(encoding="utf-8").splitlines()]
    articles = len({page["body"] for page in pages})
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(path.resolve().as_uri(), wait_until="load")
        assert page.locator(".card [data-stat='articles']").inner_text() == str(articles)
        assert page.locator("[data-stat='copies']").inner_text() == str(len(pages) - articles)
        assert page.locator("td[data-stat='sites']").count() >= 1
        assert "Copies and syndication" in page.inner_text("body")
        browser.close()
