"""A seeded synthetic crawl for measuring the batch scorer on repetitive crawls.

    python -m bench.synthetic_crawl OUT_DIR --pages 2000 --sites 20 --syndicated 0.3 --seed 0
    python -m serving.batch OUT_DIR/crawl.jsonl -o OUT.jsonl --model ARTIFACT

Real government and news portal crawls repeat themselves: every page of a site carries the same
header, menu, share buttons and footer, and one notice is reposted by dozens of portals. This
writes a crawl with both kinds of repetition, built from the labelled units, and the truth about
it. Nothing here is measured; the output is for timing the scorer, never committed.

Files written under OUT_DIR:
- `crawl.jsonl`: one page a line, `{"id", "url", "date", "text"}` — what `python -m serving.batch`
  reads from .jsonl (id, url, text; serving/sources.py), plus the publication `date` (YYYY-MM-DD)
  that serving/report.py groups by. Pages are in date order, so an original comes before its copies.
- `truth.jsonl`: one line a page, in the same order, `{"id", "site", "body", "original"}`: the
  site's host, the id of the article body on the page, and whether the page is the first posting
  of that body (every body has exactly one original; the other pages with the same body are copies).

Parameters (all have defaults; `--help` lists them):
- `--pages` (2000): the exact number of pages written.
- `--sites` (20): the number of sites. Each site has its own host (www.hefei.gov.cn,
  news.ningbo.com.cn, …) and its own furniture, fixed on every page of the site: a header (site
  name, utility links, a menu such as 首页 | 新闻中心 | 政策文件 | …, a breadcrumb), a date line
  format, a share-buttons line, a footer (organiser, copyright, an ICP line 皖ICP备xxxxxxxx号-1 with
  digits of its own, a public-security filing, a site code or telephone) and one to three lines
  of page noise taken from labels/authored/other_noise.jsonl when that file is there. Its
  "related articles" list shows 4-6 titles drawn per page from a pool of the site's own titles, so
  it varies a little between pages. Sites differ in size (lognormal weights).
- `--syndicated` (0.3): the share of article BODIES (not pages) that are syndicated. A syndicated
  body is posted by one site (the original) and copied by 2 to `--max-copies` other sites, each
  copy wrapped in that site's furniture and dated 0-5 days after the original; sites that repost
  put a one-line preface of their own between date line and body (来源：…, 转载自…) or none, so copies are
  near duplicates and not always exact ones. Every other body appears once, on one site.
  Counted over bodies: syndicated bodies / all bodies is --syndicated (to rounding; the few pages
  left over when the syndicated bodies no longer fit become single bodies). Counted over pages
  it is much larger: with c copies on average (c = (2 + max copies) / 2, i.e. 5 by default) a
  share s of bodies gives s·(1 + c) / (1 + s·c) of pages that hold a syndicated body and
  s·c / (1 + s·c) of pages that are copies: 0.3 gives 0.72 and 0.6 (see truth.jsonl).
- `--max-copies` (8): the most copies of one syndicated body (at least 2); capped at --sites - 1.
- `--seed` (0): everything is drawn from random.Random(seed) over inputs read in sorted order, so
  one seed gives the same bytes on every run and machine (with the same label files).
- `--labels` (labels/ of this checkout): the folder holding seed_units.jsonl and authored/*.jsonl.
- `--vary-units` / `--no-vary-units` (on): whether each body's units are varied lightly (see below).

An article body is a title line (a generated headline about one of the six directions or an
off-topic subject) and 4-20 units from the labelled data (seed_units.jsonl, authored/*.jsonl).
Nine bodies in ten have a main direction: about three quarters of their units have a direction,
most of them that one, and the rest are `other` rhetoric (sentence-like `other` units from outside
the noise and mojibake files); the tenth body is off-topic, rhetoric only. Units ending in
a full stop run on into paragraphs of 1-4 sentences; the others (headings, list items) stand on
lines of their own. The labelled data holds only about 3,400 distinct such units, so bodies that
are not copies of each other share sentences verbatim, which real independent articles rarely do
and which flatters any reuse of scores. --vary-units (the default) varies each drawn unit once per
body, so copies still match exactly: every number is redrawn with as many digits (years, and
digits next to Latin letters as in 6G or 3D, are kept), the cities and provinces of PLACES it
names are swapped for others, and one in five sentences gets a connective (据了解，…). Units with
none of these stay verbatim, so reuse remains: the generator prints the distinct units among all
body units (each body counted once). Seed 0, 20 sites, syndicated 0.3: 2,000 pages 69% distinct
(32% without --vary-units), 20,000 pages 44% (3.5%).

A page is header, title, date line, preface (copies only), body, related articles, share line
and footer, one block after another, lines separated by newlines, like the text of a crawled page.
"""

from __future__ import annotations

import sys

if not __package__:  # run as a file, bench/ would stand in for the repository root
    sys.exit("run it from the repository root as a module: python -m bench.synthetic_crawl --help")

import argparse
import datetime as dt
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

from runtime.jsonl import read_jsonl

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LABELS = ROOT / "labels"
OTHER = "other"
# Page noise of the authored data: furniture candidates, never body sentences.
NOISE_FILE = "other_noise.jsonl"
NOT_BODY_FILES = {NOISE_FILE, "noise_round2.jsonl", "mojibake_round3.jsonl"}
FIRST_DAY = dt.date(2024, 1, 1)
DAYS = 366
MAX_COPY_DELAY_DAYS = 5
OFF_TOPIC_BODY_SHARE = 0.1  # bodies of `other` rhetoric only
DIRECTION_SHARE = 0.75  # of the units of any other body; the rest is `other` rhetoric
MAIN_DIRECTION_SHARE = 0.7  # of its direction units
_ENDERS = "。！？；"  # ASCII ?! end a unit only in some contexts (runtime.text), so units ending in them stand alone
_CLOSERS = "”’」』）)\"'】》"

# ----------------------------------------------------------------------------- word lists

# (host name, Chinese name, province abbreviation used on ICP and public-security filings)
PLACES = [
    ("beijing", "北京市", "京"), ("shanghai", "上海市", "沪"), ("tianjin", "天津市", "津"),
    ("chongqing", "重庆市", "渝"), ("hefei", "合肥市", "皖"), ("wuhu", "芜湖市", "皖"),
    ("nanjing", "南京市", "苏"), ("suzhou", "苏州市", "苏"), ("wuxi", "无锡市", "苏"),
    ("changzhou", "常州市", "苏"), ("hangzhou", "杭州市", "浙"), ("ningbo", "宁波市", "浙"),
    ("jinan", "济南市", "鲁"), ("qingdao", "青岛市", "鲁"), ("zhengzhou", "郑州市", "豫"),
    ("wuhan", "武汉市", "鄂"), ("changsha", "长沙市", "湘"), ("guangzhou", "广州市", "粤"),
    ("shenzhen", "深圳市", "粤"), ("dongguan", "东莞市", "粤"), ("chengdu", "成都市", "川"),
    ("xian", "西安市", "陕"), ("shenyang", "沈阳市", "辽"), ("dalian", "大连市", "辽"),
    ("harbin", "哈尔滨市", "黑"), ("changchun", "长春市", "吉"), ("shijiazhuang", "石家庄市", "冀"),
    ("taiyuan", "太原市", "晋"), ("nanchang", "南昌市", "赣"), ("fuzhou", "福州市", "闽"),
    ("xiamen", "厦门市", "闽"), ("kunming", "昆明市", "滇"), ("guiyang", "贵阳市", "黔"),
    ("nanning", "南宁市", "桂"), ("haikou", "海口市", "琼"), ("lanzhou", "兰州市", "甘"),
    ("yinchuan", "银川市", "宁"), ("zhejiang", "浙江省", "浙"), ("jiangsu", "江苏省", "苏"),
    ("anhui", "安徽省", "皖"), ("shandong", "山东省", "鲁"), ("guangdong", "广东省", "粤"),
    ("hubei", "湖北省", "鄂"), ("hunan", "湖南省", "湘"), ("sichuan", "四川省", "川"),
    ("henan", "河南省", "豫"), ("hebei", "河北省", "冀"), ("fujian", "福建省", "闽"),
]
# (host pattern, name pattern, kind); {p} host name, {place} Chinese name, {short} it without 市/省
SITE_KINDS = [
    ("www.{p}.gov.cn", "{place}人民政府", "gov"),
    ("fgw.{p}.gov.cn", "{place}发展和改革委员会", "gov"),
    ("kjj.{p}.gov.cn", "{place}科学技术局", "gov"),
    ("jxj.{p}.gov.cn", "{place}经济和信息化局", "gov"),
    ("news.{p}.com.cn", "{short}新闻网", "news"),
    ("www.{p}daily.com.cn", "{short}日报", "news"),
    ("www.{p}news.cn", "{short}在线", "news"),
]
GOV_MENU = ["新闻中心", "政务公开", "政策文件", "政策解读", "政务服务", "互动交流", "数据开放", "专题专栏",
            "通知公告", "工作动态", "办事服务", "公众参与", "机构职能", "信息公开", "走进{short}"]
NEWS_MENU = ["要闻", "时政", "经济", "社会", "科技", "文化", "体育", "评论", "图片", "视频", "专题", "区县",
             "财经", "产业", "健康", "教育", "国际", "国内", "房产", "汽车"]
MENU_SEPARATORS = [" | ", "  ", " · ", "｜", " ", " - "]
GOV_UTILITY = ["无障碍", "长者模式", "繁體", "English", "登录", "注册", "智能问答", "移动版"]
NEWS_UTILITY = ["登录", "注册", "客户端", "微博", "微信", "投稿", "电子报", "English"]
SUBSECTIONS = ["工作动态", "部门动态", "区县动态", "本地新闻", "产业动态", "政策解读", "通知公告", "图片新闻"]
BREADCRUMBS = ["当前位置：首页 > {a} > {b}", "您现在的位置：首页 >> {a} >> {b}", "首页 > {a} > {b} > 正文",
               "位置：首页 > {a}", "首页 → {a} → 正文"]
DATE_LINES = ["发布时间：{date}", "{date}  来源：{name}", "日期：{date}  字号：大 中 小", "发布日期：{date}",
              "{cn_date}  来源：{name}", "时间：{date} 作者：{name}"]
RELATED_HEADINGS = ["相关文章", "相关阅读", "推荐阅读", "相关新闻", "延伸阅读", "猜你喜欢", "【相关链接】"]
RELATED_ITEMS = ["· {title}", "{n}. {title}", "{title}（{date}）", "▪ {title} {md}", "{title}"]
SHARE_BUTTONS = ["微信", "微博", "QQ空间", "QQ好友", "豆瓣", "复制链接"]
SHARE_LINES = ["分享到：{buttons}", "分享：{buttons}", "【打印本页】【关闭窗口】", "{buttons} 打印 关闭",
               "扫一扫分享本页 {buttons}"]
# How a site marks a repost; None: it reposts without a preface.
REPOST_PREFACES = [None, None, "来源：{source}", "转载自{source}", "（本文转自{source}）",
                   "来源：{source}  编辑：{editor}", "本文来源：{source}"]
AGENCIES = ["新华社", "人民日报", "人民网", "央视新闻", "中国新闻网", "经济日报", "科技日报", "中国日报网"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰涛明超秀霞平刚桂英华玉兰晓宇浩然欣怡佳琪"
CONNECTIVES = ["据了解，", "记者了解到，", "此外，", "同时，", "另外，", "与此同时，", "据悉，", "据介绍，"]
# Headline words per direction (label ids of labels/taxonomy.yaml); an unknown id falls back to OFF_TOPIC.
TOPICS = {
    "future_manufacturing": ["智能制造", "人形机器人", "工业互联网", "具身智能", "增材制造", "高端仪器", "工业母机"],
    "future_information": ["人工智能", "量子科技", "6G", "算力", "大模型", "卫星互联网", "元宇宙"],
    "future_materials": ["新材料", "石墨烯", "碳纤维", "超导材料", "高温合金", "半导体材料", "前沿材料"],
    "future_energy": ["氢能", "新型储能", "核聚变", "光伏", "绿色能源", "先进核能", "风电装备"],
    "future_space": ["商业航天", "低空经济", "深海装备", "卫星应用", "空天信息", "无人机", "深地探测"],
    "future_health": ["生物医药", "细胞与基因治疗", "脑机接口", "合成生物", "精准医疗", "高端医疗器械", "数字健康"],
}
OFF_TOPIC = ["优化营商环境", "防汛救灾", "秋季开学", "乡村振兴", "城市更新", "文旅消费", "稳就业", "安全生产"]
TITLES = [
    "{place}出台加快{topic}产业发展若干政策措施",
    "{place}召开{topic}产业推进会",
    "{topic}产业创新发展大会在{city}举行",
    "聚焦{topic} {place}打造未来产业新高地",
    "{year}年{place}{topic}产业规模突破{n}亿元",
    "{place}{topic}重点项目集中签约 总投资{n}亿元",
    "记者探访{city}{topic}企业：{topic}加速走向应用",
    "{place}印发{topic}专项行动方案（{year}—{year2}年）",
    "{topic}领域{n}个项目落地{city}",
    "关于公布{year}年度{place}{topic}示范项目名单的通知",
]
OFF_TOPIC_TITLES = ["{place}召开{topic}工作会议", "{place}部署{topic}重点工作", "{city}：扎实推进{topic}",
                    "关于做好{year}年{topic}工作的通知", "{place}{topic}工作取得新进展"]
URL_STYLES = ["{section}/{ym}/t{ymd}_{n}.html", "content/{y}-{m}/{d}/content_{n}.html",
              "{section}/{y}/{md}/c{n}.html", "art/{y}/{mi}/{di}/art_{k}_{n}.html", "{section}/{ymd}/{n}.html"]
URL_SECTIONS = ["xwzx", "zwgk", "zcwj", "gzdt", "news", "xw", "bmdt", "tzgg", "jjdt", "kjcx"]
# other_noise lines that belong to one article (bylines, sources, captions, next-article links) or name another
# site (its copyright or ICP filing), not to a site's furniture.
_NOT_FURNITURE = ("原标题", "来源", "來源", "稿源", "上一", "下一", "编辑", "編輯", "責編", "校对", "记者", "記者",
                  "摄", "作者", "图", "圖", "照片", "▲", "（完）", "统筹", "相关", "推荐", "推薦", "阅读", "閱讀",
                  "浏览", "瀏覽", "日期", "時間", "发布", "·", "【", "[", "标签", "標籤", "本文", "ICP", "公网安备",
                  "版权", "版權", "opyright", "主办", "?2024")

# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Units:
    """The labelled units a crawl is built from: direction units by label, `other` rhetoric, page noise."""

    by_direction: dict[str, list[str]]
    rhetoric: list[str]
    noise: list[str]

    @property
    def directions(self) -> list[str]:
        return sorted(self.by_direction)


def _sentence_like(text: str) -> bool:
    return len(text) >= 12 and text.rstrip(_CLOSERS)[-1:] in _ENDERS


def load_units(labels_dir: Path) -> Units:
    """Units of `labels_dir`/seed_units.jsonl and authored/*.jsonl, in sorted file order, each text once."""
    files = [labels_dir / "seed_units.jsonl", *sorted((labels_dir / "authored").glob("*.jsonl"))]
    by_direction: dict[str, list[str]] = {}
    rhetoric: list[str] = []
    noise: list[str] = []
    seen: set[str] = set()
    for path in files:
        if not path.is_file():
            continue
        for line in read_jsonl(path):
            record = line.record
            if line.error or not isinstance(record, dict) or not isinstance(record.get("text"), str):
                continue
            text = " ".join(record["text"].split())
            labels = [label for label in record.get("labels") or [] if isinstance(label, str)]
            if not text or not labels or text in seen:
                continue
            seen.add(text)
            directions = [label for label in labels if label != OTHER]
            if path.name == NOISE_FILE:
                if not directions and len(text) <= 50 and not any(word in text for word in _NOT_FURNITURE):
                    noise.append(text)
            elif path.name in NOT_BODY_FILES:
                continue
            elif directions:
                for label in directions:
                    by_direction.setdefault(label, []).append(text)
            elif _sentence_like(text):
                rhetoric.append(text)
    if not by_direction or not rhetoric:
        raise SystemExit(f"error: no labelled units with a direction and no `other` sentences under {labels_dir}")
    return Units(by_direction, rhetoric, noise)


@dataclass
class Site:
    host: str
    name: str
    kind: str
    weight: float
    header: list[str]
    date_line: str
    related_heading: str
    related_pool: list[str]  # formatted list items
    related_count: tuple[int, int]
    share_line: str
    footer: list[str]
    icp: str  # the ICP filing line, on every page of the site and no other site
    repost_preface: str | None
    url_style: str
    sections: list[str]
    next_article: int = 0


@dataclass
class Body:
    id: str
    title: str
    paragraphs: list[str]
    units: list[str]  # the labelled units (varied) the paragraphs are made of
    direction: str | None  # the main direction, None for an off-topic body
    copies: int  # pages beyond the original

    @property
    def text(self) -> str:
        return "\n".join(self.paragraphs)


@dataclass
class Page:
    id: str
    url: str
    date: str
    text: str
    site: Site
    body: Body
    original: bool
    preface: str | None = None

    def crawl_record(self) -> dict:
        return {"id": self.id, "url": self.url, "date": self.date, "text": self.text}

    def truth_record(self) -> dict:
        return {"id": self.id, "site": self.site.host, "body": self.body.id, "original": self.original}


@dataclass
class Crawl:
    pages: list[Page]
    sites: list[Site]
    bodies: list[Body] = field(default_factory=list)


# ----------------------------------------------------------------------------- generation


def _person(rng: Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))


def _digits(rng: Random, n: int) -> str:
    return str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))


def _title(rng: Random, direction: str | None) -> str:
    place = rng.choice(PLACES)[1]
    city = rng.choice([p for p in PLACES if p[1].endswith("市")])[1].removesuffix("市")
    year = rng.randint(2023, 2025)
    if direction is None or direction not in TOPICS:
        template, topic = rng.choice(OFF_TOPIC_TITLES), rng.choice(OFF_TOPIC)
    else:
        template, topic = rng.choice(TITLES), rng.choice(TOPICS[direction])
    return template.format(place=place, city=city, topic=topic, year=year, year2=year + 2, n=rng.randint(12, 980))


def _day(rng: Random) -> dt.date:
    return FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS))


def make_sites(n: int, rng: Random, units: Units) -> list[Site]:
    combos = [(place, kind) for place in PLACES for kind in SITE_KINDS]
    picks = rng.sample(combos, min(n, len(combos)))
    while len(picks) < n:  # more sites than combinations: numbered hosts (www.hefei2.gov.cn)
        picks.append(rng.choice(combos))
    hosts: set[str] = set()
    icp_numbers: set[str] = set()
    sites = []
    for (p, place, abbr), (host_pattern, name_pattern, kind) in picks:
        short = place.removesuffix("市").removesuffix("省")
        host, suffix = host_pattern.format(p=p), 2
        while host in hosts:
            host, suffix = host_pattern.format(p=f"{p}{suffix}"), suffix + 1
        hosts.add(host)
        name = name_pattern.format(place=place, short=short)
        gov = kind == "gov"
        menu_pool = [item.format(short=short) for item in (GOV_MENU if gov else NEWS_MENU)]
        menu = ["首页", *rng.sample(menu_pool, rng.randint(5, 8))]
        utility = rng.sample(GOV_UTILITY if gov else NEWS_UTILITY, rng.randint(3, 5))
        section = rng.choice(menu[1:])
        header = [rng.choice([name, f"{name} 门户网站", f"{name}欢迎您", f"{host} {name}"]),
                  " | ".join(utility),
                  rng.choice(MENU_SEPARATORS).join(menu),
                  rng.choice(BREADCRUMBS).format(a=section, b=rng.choice(SUBSECTIONS))]
        number = _digits(rng, 8)
        while number in icp_numbers:
            number = _digits(rng, 8)
        icp_numbers.add(number)
        icp = f"{abbr}ICP备{number}号-{rng.choice([1, 1, 1, 2, 3])}"
        security = f"{abbr}公网安备{_digits(rng, 14)}号"
        area_code = f"0{rng.randint(10, 999)}"
        if gov:
            footer = [f"主办：{name}  承办：{place}大数据中心",
                      f"版权所有：{name}  地址：{short}{rng.choice(['政务服务中心', '行政中心', '市民中心'])}"
                      f"{rng.randint(1, 12)}号楼  邮编：{rng.randint(10, 86)}{rng.randint(1000, 9999)}",
                      f"{icp}  {security}",
                      f"网站标识码：{_digits(rng, 10)}"]
        else:
            footer = [f"Copyright © {rng.randint(1999, 2015)}-2024 {name} 版权所有",
                      f"{icp}  {security}",
                      f"增值电信业务经营许可证：{abbr}B2-{rng.randint(2005, 2023)}{rng.randint(1000, 9999)}",
                      f"违法和不良信息举报电话：{area_code}-{_digits(rng, 8)}"]
        noise = rng.sample(units.noise, min(len(units.noise), rng.randint(1, 3)))
        for line in noise:  # page noise at the top or the bottom of the page
            (header if rng.random() < 0.5 else footer).insert(rng.randint(1, 2), line)
        related_style = rng.choice(RELATED_ITEMS)
        related_pool = []
        for i in range(rng.randint(10, 16)):
            day = _day(rng)
            direction = rng.choice([*units.directions, None])
            related_pool.append(related_style.format(title=_title(rng, direction), date=day.isoformat(),
                                                     md=day.strftime("%m-%d"), n=i + 1))
        buttons = " ".join(rng.sample(SHARE_BUTTONS, rng.randint(3, 5)))
        preface = rng.choice(REPOST_PREFACES)
        if preface and "{editor}" in preface:
            preface = preface.replace("{editor}", _person(rng))
        sites.append(Site(
            host=host, name=name, kind=kind, weight=rng.lognormvariate(0, 0.8), header=header,
            date_line=rng.choice(DATE_LINES), related_heading=rng.choice(RELATED_HEADINGS), related_pool=related_pool,
            related_count=(4, 6), share_line=rng.choice(SHARE_LINES).format(buttons=buttons), footer=footer, icp=icp,
            repost_preface=preface, url_style=rng.choice(URL_STYLES),
            sections=rng.sample(URL_SECTIONS, rng.randint(1, 3)), next_article=rng.randint(10_000, 9_000_000)))
    return sites


def plan_copies(pages: int, syndicated: float, max_copies: int, rng: Random) -> list[int]:
    """Copies per body (0: a single body) whose pages add up to exactly `pages`, with `syndicated` the share of
    bodies that have copies: syndicated bodies are added while they and their share of single bodies fit, then
    the pages left are single bodies."""
    copies: list[int] = []
    if syndicated > 0:
        used = 0
        while True:
            k = rng.randint(2, max_copies)
            singles = round((len(copies) + 1) * (1 - syndicated) / syndicated)
            if used + 1 + k + singles > pages:
                break
            copies.append(k)
            used += 1 + k
    plan = copies + [0] * (pages - sum(1 + k for k in copies))
    rng.shuffle(plan)
    return plan


_NUMBER = re.compile(r"(?<![0-9A-Za-z.])[0-9]+(?![0-9A-Za-z])")
_CITIES = sorted({name for _, name, _ in PLACES if name.endswith("市")})
_PROVINCES = sorted({name for _, name, _ in PLACES if name.endswith("省")})
# Short forms that are also parts of common words (沿海口岸, 长春藤, 大连续, 西安全): swapped only with 市.
_AMBIGUOUS = {"海口", "长春", "大连", "西安"}
# A place name with or without 市/省, longest first so 江苏省 is not read as 江苏 + 省.
_PLACE = re.compile("|".join(sorted({form for name in _CITIES + _PROVINCES for form in (name, name[:-1])
                                     if form not in _AMBIGUOUS}, key=lambda name: (-len(name), name))))


def vary(text: str, rng: Random) -> str:
    """`text` with its numbers redrawn (years and numbers glued to Latin letters kept), the cities and provinces
    of PLACES it names swapped for others of the same kind, and sometimes a connective put before it."""

    def swap(match: re.Match) -> str:
        name = match.group()
        full = name if name[-1] in "市省" else None
        kind = _PROVINCES if (full or name + "省") in _PROVINCES else _CITIES
        other = rng.choice(kind)
        return other if full else other[:-1]

    def redraw(match: re.Match) -> str:
        digits = match.group()
        if len(digits) == 4 and digits[:2] in ("19", "20"):
            return digits
        first = "0" if digits[0] == "0" else str(rng.randint(1, 9))
        return first + "".join(str(rng.randint(0, 9)) for _ in digits[1:])

    text = _PLACE.sub(swap, _NUMBER.sub(redraw, text))
    if ("\u4e00" <= text[0] <= "\u9fff" and text[0] not in "一二三四五六七八九十第" and _sentence_like(text)
            and rng.random() < 0.2):
        text = rng.choice(CONNECTIVES) + text
    return text


def make_body(index: int, copies: int, units: Units, rng: Random, vary_units: bool) -> Body:
    direction = rng.choice(units.directions) if rng.random() < 1 - OFF_TOPIC_BODY_SHARE else None
    chosen: list[str] = []
    seen: set[str] = set()
    target = rng.randint(4, 20)
    while len(chosen) < target:
        if direction is not None and rng.random() < DIRECTION_SHARE:
            pool = (units.by_direction[direction] if rng.random() < MAIN_DIRECTION_SHARE
                    else units.by_direction[rng.choice(units.directions)])
        else:
            pool = units.rhetoric
        unit = rng.choice(pool)
        if unit not in seen:
            seen.add(unit)
            chosen.append(vary(unit, rng) if vary_units else unit)
    indent = rng.choice(["", "　　", "  "])
    paragraphs: list[str] = []
    run: list[str] = []
    run_length = rng.randint(1, 4)
    for unit in chosen:
        if unit.rstrip(_CLOSERS)[-1:] in _ENDERS:
            run.append(unit)
            if len(run) >= run_length:
                paragraphs.append(indent + "".join(run))
                run, run_length = [], rng.randint(1, 4)
        else:  # a heading, list item or caption: a line of its own
            if run:
                paragraphs.append(indent + "".join(run))
                run = []
            paragraphs.append(unit)
    if run:
        paragraphs.append(indent + "".join(run))
    return Body(f"b{index:06d}", _title(rng, direction), paragraphs, chosen, direction, copies)


def _url(site: Site, day: dt.date, rng: Random) -> str:
    site.next_article += rng.randint(1, 60)
    n = site.next_article
    path = site.url_style.format(
        section=rng.choice(site.sections), ym=day.strftime("%Y%m"), ymd=day.strftime("%Y%m%d"), y=day.year,
        m=f"{day.month:02d}", d=f"{day.day:02d}", md=day.strftime("%m%d"), mi=day.month, di=day.day,
        k=n % 997 + 1, n=n)
    return f"https://{site.host}/{path}"


def page_text(site: Site, body: Body, day: dt.date, preface: str | None, rng: Random) -> str:
    count = rng.randint(*site.related_count)
    related = [site.related_pool[i] for i in sorted(rng.sample(range(len(site.related_pool)), count))]
    date_line = site.date_line.format(date=day.isoformat(), name=site.name,
                                      cn_date=f"{day.year}年{day.month:02d}月{day.day:02d}日")
    blocks = [*site.header, body.title, date_line, *([preface] if preface else []), body.text,
              site.related_heading, *related, site.share_line, *site.footer]
    return "\n".join(blocks)


def generate(pages: int = 2000, sites: int = 20, syndicated: float = 0.3, max_copies: int = 8, seed: int = 0,
             labels_dir: Path = DEFAULT_LABELS, vary_units: bool = True) -> Crawl:
    """The crawl for these settings, pages in file order (see the module docstring)."""
    if pages < 1 or sites < 1 or not 0 <= syndicated <= 1 or max_copies < 2:
        raise ValueError("need pages >= 1, sites >= 1, 0 <= syndicated <= 1 and max_copies >= 2")
    copies_cap = min(max_copies, sites - 1)
    if syndicated > 0 and copies_cap < 2:
        raise ValueError(f"a syndicated body needs at least 2 other sites: --sites {sites} is too few "
                         "(use --sites 3 or more, or --syndicated 0)")
    rng = Random(seed)
    units = load_units(Path(labels_dir))
    site_list = make_sites(sites, rng, units)
    weights = [site.weight for site in site_list]
    plan = plan_copies(pages, syndicated, copies_cap, rng)
    bodies: list[Body] = []
    # (date, order within the day, copy number): a copy of the same day sorts after its original
    keyed: list[tuple[tuple[dt.date, float, int], Site, Body, bool, str | None]] = []
    for index, copies in enumerate(plan):
        body = make_body(index, copies, units, rng, vary_units)
        bodies.append(body)
        home = rng.choices(site_list, weights)[0]
        day, order = _day(rng), rng.random()
        keyed.append(((day, order, 0), home, body, True, None))
        if copies:
            source = home.name if rng.random() < 0.7 else rng.choice(AGENCIES)
            others = rng.sample([site for site in site_list if site is not home], copies)
            for number, site in enumerate(others, 1):
                delay = rng.randint(0, MAX_COPY_DELAY_DAYS)
                copy_order = order + (1 - order) * rng.random() if delay == 0 else rng.random()
                preface = site.repost_preface.format(source=source) if site.repost_preface else None
                keyed.append(((day + dt.timedelta(days=delay), copy_order, number), site, body, False, preface))
    keyed.sort(key=lambda item: item[0])
    width = max(6, len(str(pages)))
    out = []
    for number, ((day, _, _), site, body, original, preface) in enumerate(keyed, 1):
        out.append(Page(id=f"page-{number:0{width}d}", url=_url(site, day, rng), date=day.isoformat(),
                        text=page_text(site, body, day, preface, rng), site=site, body=body, original=original,
                        preface=preface))
    return Crawl(out, site_list, bodies)


def write(crawl: Crawl, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    crawl_path, truth_path = out_dir / "crawl.jsonl", out_dir / "truth.jsonl"
    with crawl_path.open("w", encoding="utf-8", newline="\n") as pages, \
            truth_path.open("w", encoding="utf-8", newline="\n") as truth:
        for page in crawl.pages:
            pages.write(json.dumps(page.crawl_record(), ensure_ascii=False) + "\n")
            truth.write(json.dumps(page.truth_record(), ensure_ascii=False) + "\n")
    return crawl_path, truth_path


def summary(crawl: Crawl) -> str:
    bodies = crawl.bodies
    syndicated = sum(1 for body in bodies if body.copies)
    copies = sum(1 for page in crawl.pages if not page.original)
    sentences = [unit for body in bodies for unit in body.units]
    return (f"{len(crawl.pages)} pages on {len(crawl.sites)} sites: {len(bodies)} bodies, {syndicated} syndicated "
            f"({syndicated / max(len(bodies), 1):.1%} of bodies), {copies} pages are copies "
            f"({copies / max(len(crawl.pages), 1):.1%} of pages); {len(set(sentences))} distinct units of "
            f"{len(sentences)} in the bodies (each body counted once)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.synthetic_crawl",
        description="Write a seeded synthetic crawl (OUT_DIR/crawl.jsonl, for python -m serving.batch) with the "
                    "repetition of real portal crawls: per-site furniture on every page and syndicated articles "
                    "reposted by several sites; OUT_DIR/truth.jsonl says which pages carry the same body. "
                    "See the module docstring for the design.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder to write crawl.jsonl and truth.jsonl "
                        "into (created if missing; existing files of those names are replaced)")
    parser.add_argument("--pages", type=int, default=2000, help="exact number of pages in the crawl")
    parser.add_argument("--sites", type=int, default=20, help="number of sites, each with its own host and its own "
                        "header, menu, related-articles pool, share line and footer with an ICP line")
    parser.add_argument("--syndicated", type=float, default=0.3, help="share of article bodies (not pages) that are "
                        "syndicated: posted on one site and copied by 2 to --max-copies other sites 0-5 days later, "
                        "each copy in its site's furniture; the rest appear on one site only. 0.3 with 8 copies at "
                        "most makes about 60%% of pages copies")
    parser.add_argument("--max-copies", type=int, default=8, help="most copies of one syndicated body (at least 2; "
                        "capped at --sites - 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same bytes")
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS, help="folder with seed_units.jsonl and "
                        "authored/*.jsonl, the labelled units bodies and noise lines are drawn from")
    parser.add_argument("--vary-units", action=argparse.BooleanOptionalAction, default=True, help="redraw the "
                        "numbers in each body's units and add a connective to some, so bodies that are not copies "
                        "share few sentences (copies of one body stay identical)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        crawl = generate(args.pages, args.sites, args.syndicated, args.max_copies, args.seed, args.labels,
                         args.vary_units)
    except ValueError as exc:
        parser.error(str(exc))
    crawl_path, truth_path = write(crawl, args.out_dir)
    seconds = time.perf_counter() - start
    print(summary(crawl))
    print(f"wrote {crawl_path} ({crawl_path.stat().st_size / 1e6:.1f} MB) and {truth_path} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
