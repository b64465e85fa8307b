"""bench.synthetic_crawl: a seeded crawl with per-site furniture and syndicated copies, and its truth file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from bench.synthetic_crawl import ROOT, generate, main
from runtime.text import clean, split_units
from serving.sources import Document, iter_documents


def run(out: Path, *args: str) -> tuple[list[dict], list[dict]]:
    assert main([str(out), *args]) == 0
    read = [[json.loads(line) for line in (out / name).read_text(encoding="utf-8").splitlines()]
            for name in ("crawl.jsonl", "truth.jsonl")]
    return read[0], read[1]


def test_the_same_seed_writes_the_same_bytes_and_another_seed_does_not(tmp_path) -> None:
    args = ["--pages", "150", "--sites", "6"]
    run(tmp_path / "a", *args, "--seed", "0")
    run(tmp_path / "c", *args, "--seed", "1")
    # The command line in another process, with other string hashes: nothing may depend on set order.
    subprocess.run([sys.executable, "-m", "bench.synthetic_crawl", str(tmp_path / "b"), *args, "--seed", "0"],
                   check=True, capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "12345"})
    for file in ("crawl.jsonl", "truth.jsonl"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
        assert (tmp_path / "a" / file).read_bytes() != (tmp_path / "c" / file).read_bytes()


@pytest.mark.parametrize("pages, syndicated", [(1, 0.3), (7, 0.3), (333, 0.3), (250, 0.0), (250, 1.0)])
def test_exactly_the_pages_asked_for(tmp_path, pages, syndicated) -> None:
    crawl, truth = run(tmp_path, "--pages", str(pages), "--sites", "10", "--syndicated", str(syndicated))
    assert len(crawl) == len(truth) == pages
    assert [page["id"] for page in crawl] == [row["id"] for row in truth]
    assert len({page["id"] for page in crawl}) == len({page["url"] for page in crawl}) == pages
    for page, row in zip(crawl, truth):
        assert set(page) == {"id", "url", "date", "text"}
        assert page["url"].startswith(f"https://{row['site']}/") and page["url"].endswith(".html")


def test_the_scorer_reads_every_page_with_its_id_and_url(tmp_path) -> None:
    crawl, _ = run(tmp_path, "--pages", "40", "--sites", "5")
    documents = list(iter_documents([str(tmp_path / "crawl.jsonl")]))
    assert all(isinstance(document, Document) for document in documents)
    assert [(d.id, d.url, d.text) for d in documents] == [(p["id"], p["url"], p["text"]) for p in crawl]


def test_the_syndicated_share_is_a_share_of_bodies(tmp_path) -> None:
    # --syndicated s is the share of bodies with copies; with c copies on average (c = (2 + 8) / 2 = 5)
    # s·c / (1 + s·c) of the pages are copies: 0.3 -> 0.6.
    crawl, truth = run(tmp_path, "--pages", "3000", "--sites", "20", "--syndicated", "0.3", "--max-copies", "8")
    pages_of: dict[str, list[dict]] = defaultdict(list)
    for row in truth:
        pages_of[row["body"]].append(row)
    syndicated = [rows for rows in pages_of.values() if len(rows) > 1]
    assert abs(len(syndicated) / len(pages_of) - 0.3) < 0.01
    copies = sum(not row["original"] for row in truth)
    assert abs(copies / len(truth) - 0.3 * 5 / (1 + 0.3 * 5)) < 0.04
    dates = {page["id"]: page["date"] for page in crawl}
    for rows in pages_of.values():
        # one original, first in the file, on a site of its own; 2-8 copies on other sites, 0-5 days later
        assert [row["original"] for row in rows] == [True] + [False] * (len(rows) - 1)
        assert len(rows) == 1 or 3 <= len(rows) <= 9
        assert len({row["site"] for row in rows}) == len(rows)
        first = dates[rows[0]["id"]]
        assert all(first <= dates[row["id"]] for row in rows)


def test_no_copies_without_syndication_and_too_few_sites_is_refused(tmp_path) -> None:
    _, truth = run(tmp_path, "--pages", "200", "--syndicated", "0")
    assert all(row["original"] for row in truth) and len({row["body"] for row in truth}) == 200
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x"), "--pages", "10", "--sites", "2", "--syndicated", "0.5"])


@pytest.fixture(scope="module")
def crawl():
    return generate(pages=600, sites=12, syndicated=0.4, seed=3)


def test_every_page_of_a_site_has_that_sites_furniture_and_no_other_sites_footer(crawl) -> None:
    icps = {site.host: site.icp for site in crawl.sites}
    assert len(set(icps.values())) == len(crawl.sites)
    for page in crawl.pages:
        site = page.site
        assert page.text.startswith("\n".join(site.header) + "\n")
        assert page.text.endswith("\n" + "\n".join([site.share_line, *site.footer]))
        assert any(site.icp in line for line in site.footer)
        assert [host for host, icp in icps.items() if icp in page.text] == [site.host]


def test_copies_of_a_body_share_its_text_in_their_own_sites_furniture(crawl) -> None:
    pages_of = defaultdict(list)
    for page in crawl.pages:
        pages_of[page.body.id].append(page)
    copied = [pages for pages in pages_of.values() if len(pages) > 1]
    assert copied
    for pages in copied:
        body = pages[0].body
        assert body.copies == len(pages) - 1 and pages[0].original
        for page in pages:
            assert f"\n{body.title}\n" in page.text and f"\n{body.text}\n" in page.text
            assert page.site.header[0] in page.text and page.site.icp in page.text
            assert not any(other.site.icp in page.text for other in pages if other.site is not page.site)
        assert len({page.text for page in pages}) == len(pages)  # same body, different pages
    # Related-article lists vary between pages of one site; the rest of the furniture does not.
    by_site = defaultdict(set)
    for page in crawl.pages:
        lines = page.text.splitlines()
        start = lines.index(page.site.related_heading, len(page.site.header))
        by_site[page.site.host].add(tuple(lines[start + 1:lines.index(page.site.share_line, start)]))
    assert all(len(lists) > 1 for host, lists in by_site.items()
               if sum(page.site.host == host for page in crawl.pages) > 5)


def test_pages_split_into_units(crawl) -> None:
    for page in crawl.pages[:40]:
        units = split_units(page.text)
        texts = {unit.text for unit in units}
        assert units and all(unit.text for unit in units)
        assert clean(page.body.title) in texts
        assert any(clean(page.site.icp) in text for text in texts)
        # Each labelled unit splits on the page as it does alone: none is run together with the next one.
        for unit in page.body.units:
            assert {piece.text for piece in split_units(unit)} <= texts
