"""Syndicated copies grouped (serving/dedup.py), on constructed unit records: no model, seconds."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from serving.dedup import (
    NO_SITE,
    furniture_pages,
    group_pages,
    lsh_bands,
    main,
    page_bodies,
    site_of,
)
from serving.output import ParquetWriter, Writer, read_units

# Common characters of news text: random sentences over them share characters and some short runs, as
# different articles do, but no sentence.
CHARS = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面"
         "而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把"
         "性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质"
         "气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活"
         "设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则")


def sentence(rng: random.Random, length: int = 40) -> str:
    return "".join(rng.choice(CHARS) for _ in range(length)) + "。"


def article(seed: int | str, sentences: int = 20) -> list[str]:
    rng = random.Random(seed)
    return [sentence(rng) for _ in range(sentences)]


def furniture(site: str, lines: int = 6) -> tuple[list[str], list[str]]:
    """A site's header (name, menu, breadcrumb) and footer (copyright, ICP line), its own words."""
    rng = random.Random(site)
    header = [f"{site} 门户网站", "首页 | 新闻 | 政务公开 | 办事服务 | " + sentence(rng, 6),
              *(f"{site} " + sentence(rng, 10) for _ in range(lines - 2))]
    footer = [f"版权所有 {site}", f"ICP备{rng.randrange(10**7, 10**8)}号", "主办单位：" + sentence(rng, 8)]
    return header, footer


def page(doc_id: str, url: str | None, texts: list[str]) -> list[dict]:
    """Unit records as python -m serving.batch writes them."""
    return [{"doc_id": doc_id, "url": url, "index": i, "start": 0, "end": len(text), "text": text,
             "labels": ["other"], "top_label": "other", "scores": {"future_energy": 0.1, "other": 0.9},
             "truncated": False, "damaged": False} for i, text in enumerate(texts)]


def on_site(doc_id: str, site: str, body: list[str], preface: list[str] = (), lines: int = 6) -> list[dict]:
    header, footer = furniture(site, lines)
    return page(doc_id, f"https://www.{site}/art/{doc_id}.html", [*header, *preface, *body, *footer])


def filler(site: str, n: int = 2) -> list[dict]:
    """Other articles of a site, so that its furniture shows up on several pages."""
    return [unit for i in range(n) for unit in on_site(f"{site}-other-{i}", site, article(f"{site}-{i}", 5))]


def groups_of(groups) -> set[frozenset]:
    members: dict[str, set] = {}
    for doc_id, group in groups.items():
        members.setdefault(group.group, set()).add(doc_id)
    return {frozenset(m) for m in members.values()}


# ----------------------------------------------------------------------------- bodies


def test_furniture_is_what_repeats_on_one_site_not_across_sites() -> None:
    text = article(1)
    units = [*on_site("a1", "a.gov.cn", text), *on_site("a2", "a.gov.cn", article(2)),
             *on_site("b1", "b.gov.cn", text)]
    bodies = page_bodies(units)
    assert [b.site for b in bodies.values()] == ["a.gov.cn", "a.gov.cn", "b.gov.cn"]
    assert [u["text"] for u in bodies["a1"].body_units] == text  # header and footer of a.gov.cn dropped
    assert [u["text"] for u in bodies["a2"].body_units] == article(2)
    # b.gov.cn has one page: nothing repeats there; the article repeated on a.gov.cn is not furniture.
    assert len(bodies["b1"].body_units) == len(bodies["b1"].units)
    assert bodies["a1"].body == "\n".join(text)
    assert len(bodies["a1"].furniture) == len(bodies["a1"].units) - len(text)


def test_units_are_put_in_index_order_and_sites_read_like_the_report() -> None:
    units = list(reversed(page("p", "http://WWW.Example.gov.cn:8080/x", ["一", "二", "三"])))
    assert [u["text"] for u in page_bodies(units)["p"].units] == ["一", "二", "三"]
    assert site_of("http://www.example.gov.cn/a") == "example.gov.cn"
    assert site_of("example.gov.cn/a") == "example.gov.cn"
    assert site_of(None) == site_of("") == NO_SITE


def test_big_sites_need_a_share_of_their_pages_for_furniture() -> None:
    assert furniture_pages(2) == furniture_pages(40) == 2
    assert furniture_pages(41) == 3 and furniture_pages(300) == 15
    # 300 pages on one site: a menu on all of them is furniture, a notice posted in two columns is not.
    rng = random.Random(7)
    notice = sentence(rng)
    units = []
    for i in range(300):
        texts = ["首页 | 通知公告 | 政策文件", sentence(rng), *([notice] if i in (10, 20) else [])]
        units += page(f"p{i}", f"https://big.gov.cn/{i}", texts)
    bodies = page_bodies(units)
    assert [u["text"] for u in bodies["p10"].body_units][-1] == notice
    assert all(u["text"] != "首页 | 通知公告 | 政策文件" for b in bodies.values() for u in b.body_units)


# ----------------------------------------------------------------------------- groups


def test_exact_copies_on_different_sites_are_one_group() -> None:
    text = article(1)
    units = [*on_site("a", "a.gov.cn", text), *on_site("b", "b.com.cn", text), *on_site("c", "c.gov.cn", text),
             *filler("a.gov.cn"), *filler("b.com.cn"), *filler("c.gov.cn")]
    groups = group_pages(units)
    assert groups["a"] == groups["b"] == groups["c"]
    assert (groups["a"].group, groups["a"].canonical, groups["a"].size, groups["a"].sites) == ("a", "a", 3, 3)
    assert groups["a.gov.cn-other-0"].size == 1


def test_copies_under_each_sites_own_furniture_and_a_preface_are_one_group() -> None:
    body = article(3, sentences=6)  # short: the furniture (9 units per site) outweighs it
    units = [*on_site("a", "a.gov.cn", body), *filler("a.gov.cn"),
             *on_site("b", "b.gov.cn", body, preface=["来源：a.gov.cn 转载"]), *filler("b.gov.cn"),
             *on_site("c", "c.com", body, preface=["编者按：现将有关情况转发如下。"]), *filler("c.com")]
    bodies = page_bodies(units)
    assert [u["text"] for u in bodies["b"].body_units] == ["来源：a.gov.cn 转载", *body]
    groups = group_pages(units)
    assert groups_of(groups) >= {frozenset({"a", "b", "c"})}
    assert groups["b"].sites == 3


def test_different_articles_on_one_site_sharing_all_its_furniture_are_apart() -> None:
    # Three pages of one site: 23 units of furniture each and a 2-sentence article of their own, so the whole
    # pages are mostly the same text (Jaccard about 0.7); their bodies are not.
    units = [unit for i in range(3) for unit in on_site(f"p{i}", "a.gov.cn", article(10 + i, sentences=2),
                                                         lines=20)]
    groups = group_pages(units)
    assert groups_of(groups) == {frozenset({"p0"}), frozenset({"p1"}), frozenset({"p2"})}


def test_pages_that_are_all_furniture_are_their_own_groups() -> None:
    header, footer = furniture("list.gov.cn")
    units = [*page("l1", "https://list.gov.cn/1", [*header, *footer]),  # two identical index pages ...
             *page("l2", "https://list.gov.cn/2", [*header, *footer]),
             *page("l3", "https://list.gov.cn/3", [*header[:2], *footer]),  # ... and a shorter one
             *page("x", "https://other.gov.cn/1", [*header, *footer])]  # the same text on another site
    bodies = page_bodies(units)
    assert [bodies[d].body for d in ("l1", "l2", "l3")] == ["", "", ""]
    groups = group_pages(units)
    for doc_id in ("l1", "l2", "l3"):
        assert groups[doc_id].group == doc_id and groups[doc_id].size == 1
    assert groups["x"].size == 1  # a lone page of its site: all text, but nothing to be a copy of


def test_pages_without_a_url_share_no_furniture_and_still_group() -> None:
    text = article(4)
    units = [*page("u1", None, ["转载", *text]), *page("u2", None, ["来源：网络", *text]),
             *page("u3", None, article(5))]
    bodies = page_bodies(units)
    assert {b.site for b in bodies.values()} == {NO_SITE}
    assert all(len(b.body_units) == len(b.units) for b in bodies.values())
    groups = group_pages(units)
    assert groups_of(groups) == {frozenset({"u1", "u2"}), frozenset({"u3"})}
    assert groups["u1"].sites == 1


def test_canonical_is_the_earliest_dated_copy_else_the_first_one() -> None:
    text = article(6)
    units = [*on_site("first", "a.gov.cn", text), *on_site("second", "b.gov.cn", text),
             *on_site("third", "c.gov.cn", text)]
    assert {g.canonical for g in group_pages(units).values()} == {"first"}
    dated = group_pages(units, dates={"second": "2024-03-09", "third": "2024-03-07"})
    assert {(g.group, g.canonical) for g in dated.values()} == {("third", "third")}
    # Dated copies come before undated ones; equal dates go to input order.
    assert group_pages(units, dates={"third": "2024-05-01"})["first"].canonical == "third"
    tie = group_pages(units, dates={"first": None, "second": "2024-01-01", "third": "2024-01-01"})
    assert tie["first"].canonical == "second"


def test_a_copy_with_a_tenth_changed_groups_and_one_shared_sentence_does_not() -> None:
    text = article(7)
    rng = random.Random(8)
    changed = [sentence(rng) if i in (3, 11) else s for i, s in enumerate(text)]  # 90 % of the body shared
    shortened = [s for i, s in enumerate(text) if i not in (5, 15)]
    edited = [s[:10] + "某" + s[11:] if i % 3 == 0 else s for i, s in enumerate(text)]
    sharing_one = [text[0], *article(9)[1:]]
    half = [s if i % 2 else other for i, (s, other) in enumerate(zip(text, article(10)))]
    units = [*on_site("original", "a.gov.cn", text), *on_site("changed", "b.gov.cn", changed),
             *on_site("shortened", "c.gov.cn", shortened), *on_site("edited", "d.gov.cn", edited),
             *on_site("one", "e.gov.cn", sharing_one), *on_site("half", "f.gov.cn", half)]
    groups = group_pages(units)
    assert groups_of(groups) == {frozenset({"original", "changed", "shortened", "edited"}), frozenset({"one"}),
                                 frozenset({"half"})}
    # A stricter threshold keeps only the closest copies together.
    assert group_pages(units, threshold=0.95)["changed"].size == 1


def test_bodies_shorter_than_a_shingle_are_their_own_groups() -> None:
    units = [*page("a", "https://a.cn/1", ["详见附件。"]), *page("b", "https://b.cn/1", ["详见附件。"]),
             *page("c", "https://c.cn/1", ["详见附件说明。"]), *page("d", "https://d.cn/1", ["详见附件说明。"])]
    groups = group_pages(units)
    assert groups["a"].size == groups["b"].size == 1  # 4 letters: less than one shingle, nothing to compare
    assert groups["c"] == groups["d"]  # 6 letters: two shingles, the same


def test_grouping_is_deterministic_and_the_lsh_finds_pairs_at_the_threshold() -> None:
    units = [*on_site("a", "a.gov.cn", article(1)), *on_site("b", "b.gov.cn", article(1)[:17]),
             *on_site("c", "c.gov.cn", article(2))]
    assert group_pages(units) == group_pages(list(units))
    for threshold in (0.3, 0.5, 0.8):
        bands, rows = lsh_bands(threshold, 128)
        assert bands * rows <= 128 and 1 - (1 - threshold ** rows) ** bands >= 0.99
    with pytest.raises(ValueError, match="threshold"):
        group_pages(units, threshold=0)


# ----------------------------------------------------------------------------- command line


def crawl_docs() -> list[tuple[dict, list[dict], dict]]:
    """(head, units, summary) per document, as python -m serving.batch hands them to its writer."""
    text, rng = article(20), random.Random(21)
    near = [sentence(rng) if i == 4 else s for i, s in enumerate(text)]
    units = [*on_site("a1", "a.gov.cn", text), *filler("a.gov.cn"), *on_site("b1", "b.gov.cn", near),
             *filler("b.gov.cn"), *on_site("c1", "c.gov.cn", text, preface=["来源：a.gov.cn"]), *filler("c.gov.cn"),
             *page("bare", None, article(22))]
    docs: dict[str, tuple[dict, list[dict], dict]] = {}
    for unit in units:
        head = {"doc_id": unit["doc_id"], "url": unit["url"], "source": "crawl.jsonl"}
        summary = {"units": 0, **({"date": "2024-02-01"} if unit["doc_id"] == "c1" else {})}
        docs.setdefault(unit["doc_id"], (head, [], summary))[1].append(
            {k: v for k, v in unit.items() if k not in ("doc_id", "url")})
    return list(docs.values())


def write_scored(out: Path) -> Path:
    writer = (ParquetWriter if out.suffix == ".parquet" else Writer)(out)
    writer.write(crawl_docs())
    writer.close()
    return out


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cli_gives_the_same_groups_on_jsonl_and_parquet(tmp_path, capsys) -> None:
    jsonl = write_scored(tmp_path / "j" / "units.jsonl")
    parquet = write_scored(tmp_path / "p" / "units.parquet")
    assert parquet.is_dir() and len(read_units(parquet)) == len(read_units(jsonl))
    assert main([str(jsonl)]) == 0
    line = capsys.readouterr().err.strip()
    assert main([str(parquet)]) == 0
    assert capsys.readouterr().err.strip().replace("/p/units.parquet", "/j/units.jsonl") \
        .replace("/p/units.groups", "/j/units.groups") == line
    from_jsonl = read_lines(tmp_path / "j" / "units.groups.jsonl")
    assert read_lines(tmp_path / "p" / "units.groups.jsonl") == from_jsonl  # beside the folder, not inside
    assert not (parquet / "groups.jsonl").exists()
    by_doc = {r["doc_id"]: r for r in from_jsonl}
    assert list(by_doc) == ["a1", "a.gov.cn-other-0", "a.gov.cn-other-1", "b1", "b.gov.cn-other-0",
                            "b.gov.cn-other-1", "c1", "c.gov.cn-other-0", "c.gov.cn-other-1", "bare"]
    assert set(from_jsonl[0]) == {"doc_id", "group", "canonical", "size", "sites"}
    # c1 is the only dated copy (its summary line has a date), so it is the canonical one.
    assert by_doc["a1"] == {"doc_id": "a1", "group": "c1", "canonical": "c1", "size": 3, "sites": 3}
    assert by_doc["b1"]["group"] == by_doc["c1"]["group"] == "c1"
    assert by_doc["bare"] == {"doc_id": "bare", "group": "bare", "canonical": "bare", "size": 1, "sites": 1}
    assert line.startswith("10 pages, 8 groups: 2 pages are copies of another (1 article on 2+ pages); largest "
                           "group 3 pages on 3 sites (canonical c1); 0 pages all furniture -> ")


def test_cli_runs_as_a_module_with_its_own_output_and_threshold(tmp_path) -> None:
    scored = write_scored(tmp_path / "units.jsonl")
    out = tmp_path / "g" / "groups.jsonl"
    runs = []
    for hash_seed in ("1", "2"):  # nothing may depend on Python's per-process string hashing
        result = subprocess.run([sys.executable, "-m", "serving.dedup", str(scored), "-o", str(out),
                                 "--threshold", "0.95"], capture_output=True, text=True,
                                env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert result.returncode == 0, result.stderr
        runs.append(out.read_text(encoding="utf-8"))
    assert runs[0] == runs[1]
    by_doc = {r["doc_id"]: r for r in read_lines(out)}
    # At 0.95 the copy with a preface line stays, the one with a sentence in twenty changed goes.
    assert by_doc["a1"]["size"] == by_doc["c1"]["size"] == 2 and by_doc["b1"]["size"] == 1


def test_cli_help_explains() -> None:
    result = subprocess.run([sys.executable, "-m", "serving.dedup", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for needle in ("syndicated", "furniture", "--threshold", ".groups.jsonl", ".parquet", "canonical"):
        assert needle in result.stdout


@pytest.mark.parametrize("make, fragment", [
    (lambda d: d / "missing.jsonl", "does not exist"),
    (lambda d: (d / "crawl").mkdir() or d / "crawl", "is a folder"),
    (lambda d: (d / "x.parquet").write_text("no") and d / "x.parquet", "is a file"),
    (lambda d: (d / "bad.jsonl").write_text("not json\n") and d / "bad.jsonl", "not valid JSON"),
    (lambda d: (d / "empty.jsonl").write_text("") or d / "empty.jsonl", "holds no units"),
    (lambda d: (d / "labels.jsonl").write_text('{"text": "a"}\n') and d / "labels.jsonl", "is not a unit record"),
    (lambda d: (d / "u.pages.jsonl").write_text("{}\n") and d / "u.pages.jsonl", "is the page-summary file"),
    (lambda d: (d / "latin1.jsonl").write_bytes("{\"text\": \"é\"}".encode("latin-1")) and d / "latin1.jsonl",
     "cannot read"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, make, fragment) -> None:
    assert main([str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def test_cli_refuses_to_write_inside_the_parquet_folder_and_bad_thresholds(tmp_path, capsys) -> None:
    parquet = write_scored(tmp_path / "units.parquet")
    assert main([str(parquet), "-o", str(parquet / "groups.jsonl")]) == 2
    assert "inside the Parquet folder" in capsys.readouterr().err
    assert main([str(parquet), "-o", str(parquet / "_groups.jsonl")]) == 0
    for bad in ("0", "1.5", "abc"):
        with pytest.raises(SystemExit) as exit_info:
            main([str(parquet), "--threshold", bad])
        assert exit_info.value.code == 2
    assert "--threshold: must be a number above 0 and at most 1" in capsys.readouterr().err
