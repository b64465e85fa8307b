"""Raw crawled page -> clean sentence units.

This is the only place where text is normalised. Training, the HTTP service and
the batch scorer all import it, so a unit looks exactly the same to the model in
production as it did in training. Any change to what `clean` or `split_units`
returns must bump PREPROCESSING_VERSION (the artifact records it, and the seed
label file is checked against the splitter's output).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from functools import lru_cache

PREPROCESSING_VERSION = "1"

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TONED = "āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜńňǹḿ"

# Broken traditional-script conversions leave a one-syllable, tone-marked pinyin
# gloss after each character: 當(dāng)前, 產(chǎn)業(yè). The gloss is lowercase, has
# exactly one tone mark and directly follows a Han character (or the latin
# remnant of a mojibake character, as in 規(guī)?;l(fā)展). Anything else in
# parentheses — 北京(Beijing), (记者马志辉), (下称《方案》) — is real text and stays.
_GLOSS = re.compile(
    rf"(?<=[{_HAN}])\((?:[bpmfdtnlgkhjqxrzcsyw]|zh|ch|sh)?[a-zü]*[{_TONED}][a-zü]*\)"
    rf"|(?<=[^a-zA-Z][a-z])\((?:[bpmfdtnlgkhjqxrzcsyw]|zh|ch|sh)?[a-zü]*[{_TONED}][a-zü]*\)"
)
_INVISIBLE = re.compile(r"[\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")
_WHITESPACE = re.compile(r"\s+")


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def _is_dropped_char(ch: str) -> bool:
    # Control, format and private-use characters carry no text; the private-use
    # ones are font glyphs a crawler copied from an icon font.
    return unicodedata.category(ch) in {"Cc", "Cf", "Co", "Cs"} and ch not in "\n\t"


def clean(text: str) -> str:
    """Normalise one unit of text for the model.

    NFKC (full-width forms to ASCII), invisible and control characters removed,
    crawler pinyin glosses removed, whitespace collapsed to single spaces,
    traditional script converted to simplified with OpenCC. Idempotent.
    """
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text)
    text = "".join(ch for ch in text if not _is_dropped_char(ch))
    text = _GLOSS.sub("", text)
    text = _WHITESPACE.sub(" ", text).strip()
    return _simplified(text)


# OpenCC's t2s is not idempotent everywhere: 薴 becomes 苧, which it then maps to 苎. Converting
# until nothing changes makes `clean` idempotent, so text cleaned twice (a caller that cleans
# what the splitter already cleaned) is what the model saw in training. Every BMP character settles
# within two conversions (tests/runtime/test_text.py); the bound only guards against a cycle in a future OpenCC.
_T2S_MAX_ROUNDS = 4


def _simplified(text: str) -> str:
    converter = _t2s()
    for _ in range(_T2S_MAX_ROUNDS):
        converted = converter.convert(text)
        if converted == text:
            break
        text = converted
    return text


@dataclass(frozen=True)
class Unit:
    """One sentence, list item or line of a page.

    `start`/`end` index the original page string (Python character offsets), so
    `page[start:end]` is the raw unit; `text` is its cleaned form.
    """

    index: int
    start: int
    end: int
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


# Full-width terminators always end a sentence. ASCII ? and ! do only when they
# stand alone: in mojibake they come in runs or glued to ; and latin letters
# (深??仗扉_發(fā), 規(guī)?;l(fā)展, 新?!焙罹盀I), and splitting there would cut a
# damaged word in half.
_ENDERS = "。！？；"
_ASCII_ENDERS = "?!"
_CLOSERS = "”’」』）)\"'】》"
_PUNCT_ONLY = re.compile(r"^[\W_]*$")


def _ascii_ender_ends(line: str, i: int) -> bool:
    prev = line[i - 1] if i > 0 else ""
    nxt = line[i + 1] if i + 1 < len(line) else ""
    if prev in _ASCII_ENDERS or nxt in _ASCII_ENDERS or nxt == ";":
        return False
    if nxt.isascii() and nxt.isalnum():
        return False
    return True


def _sentence_ends(line: str) -> list[int]:
    """Offsets (exclusive) inside `line` after which a sentence ends."""
    ends: list[int] = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch in _ENDERS or (ch in _ASCII_ENDERS and _ascii_ender_ends(line, i)):
            j = i + 1
            while j < len(line) and line[j] in _ENDERS:
                j += 1
            # A closing quote or bracket belongs to the sentence it closes.
            while j < len(line) and line[j] in _CLOSERS:
                j += 1
            ends.append(j)
            i = j
        else:
            i += 1
    return ends


def split_units(page: str) -> list[Unit]:
    """Split a raw page into units on line breaks and sentence-final punctuation.

    Units whose cleaned text is empty or punctuation only are dropped; indices
    count the kept units. Deterministic: the same page gives the same units.
    """
    units: list[Unit] = []
    pos = 0
    for line in page.splitlines(keepends=True):
        line_start = pos
        pos += len(line)
        body = line.rstrip("\r\n\u2028\u2029\x0b\x0c\x1c\x1d\x1e\x85")
        cut = 0
        for end in _sentence_ends(body) + [len(body)]:
            if end <= cut:
                continue
            piece = body[cut:end]
            lead = len(piece) - len(piece.lstrip())
            trail = len(piece.rstrip())
            start, stop = line_start + cut + lead, line_start + cut + trail
            cut = end
            if stop <= start:
                continue
            text = clean(page[start:stop])
            if not text or _PUNCT_ONLY.match(text):
                continue
            units.append(Unit(len(units), start, stop, text))
    return units


# ----------------------------------------------------------------------------- decoding damage
# Text decoded with the wrong codec is labelled `other` (labels/GUIDELINES.md, Damaged text), but an
# analyst wants such pages re-fetched, not just scored as noise. `looks_damaged` flags a unit whose
# characters are mostly what wrong decoding produces; it reads `clean`'s output and changes nothing.
# Measured (tests/runtime/test_text.py): all 70 units of labels/authored/mojibake_round3.jsonl (real codec
# mis-decodings, wholly or partly damaged) flagged; of the other 4,542 authored units only the 9
# mojibake lines of noise_round2.jsonl; none of the 238 seed units. The highest clean unit, a
# titanium sentence, has a suspicious share of 0.075, the highest seed unit 0.079 (a line with a
# few characters of "?" damage, which stays unflagged); the lowest damaged unit 0.18.
#
# What counts as suspicious, per non-space character:
# - U+FFFD, what a decoder writes for bytes it cannot read (GBK read as UTF-8 is mostly this);
# - Latin-1 and cp1252 letters and signs (UTF-8 or GBK bytes read as Latin-1 or cp1252: å›½å®¶,
#   ¹ú¼Ò), and what NFKC leaves of some of them (combining accents, the fraction slash), except the
#   signs Chinese pages use themselves (° from ℃, ±, ·, ×, ÷, «», ©, ®, ¥, §, µ);
# - Han characters outside GB2312 level 1, the 3,755 common characters: UTF-8 read as GBK or Big5
#   read as GBK gives mostly rare ones (鍙戝睍, 锟斤拷 starts with one), while even a dense
#   metallurgy sentence (钛, 锂) has under a tenth of them after `clean` made it simplified.
# A unit is damaged when at least DAMAGE_SHARE of its characters and DAMAGE_MIN_CHARS of them are
# suspicious; the count keeps a short name with one rare character (校对:吴倩) out.
DAMAGE_SHARE = 0.12
DAMAGE_MIN_CHARS = 3
_LATIN_KEPT = frozenset("°±·×÷«»©®¥§µ")
# The letters and signs cp1252 has where Latin-1 has C1 controls, less the quotes, dashes and
# ellipsis Chinese text uses itself (and bullets, common in menus).
_CP1252_EXTRA = frozenset("€‚ƒ„†‡ˆ‰Š‹ŒŽ˜™š›œžŸ")
_NFKC_RESIDUE = re.compile(r"[\u0300-\u036f\u2044]")


@lru_cache(maxsize=1)
def _common_han() -> frozenset[str]:
    # GB2312 level 1: lead bytes 0xB0-0xD7, trail bytes 0xA1-0xFE (the last row stops at 0xF9).
    chars = set()
    for lead in range(0xB0, 0xD8):
        for trail in range(0xA1, 0xFF):
            try:
                chars.add(bytes((lead, trail)).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    return frozenset(chars)


def _suspicious(ch: str, common: frozenset[str]) -> bool:
    code = ord(ch)
    if code == 0xFFFD:
        return True
    if 0xA1 <= code <= 0xFF:  # Latin-1 signs and letters
        return ch not in _LATIN_KEPT
    if ch in _CP1252_EXTRA:
        return True
    if _HAN_RE.match(ch):
        return ch not in common
    return bool(_NFKC_RESIDUE.match(ch))


_HAN_RE = re.compile(f"[{_HAN}]")


def damage_share(text: str) -> tuple[int, float]:
    """(suspicious characters, their share of the non-space characters) of a cleaned unit."""
    common = _common_han()
    chars = [ch for ch in text if not ch.isspace()]
    if not chars:
        return 0, 0.0
    suspicious = sum(_suspicious(ch, common) for ch in chars)
    return suspicious, suspicious / len(chars)


def looks_damaged(text: str) -> bool:
    """Whether a cleaned unit looks like text decoded with the wrong codec (mojibake); see above."""
    count, share = damage_share(text)
    return count >= DAMAGE_MIN_CHARS and share >= DAMAGE_SHARE


@lru_cache(maxsize=1)
def kept_character_pattern() -> str:
    """A regex class of the characters `clean` keeps in the Basic Multilingual Plane.

    A text must contain one, or it is empty after cleaning: everything but whitespace, control,
    format, private-use and the invisible characters `clean` strips. Only BMP characters are
    listed: the service publishes this as an OpenAPI (ECMAScript) pattern, which cannot name a
    character above U+FFFF the way Python does, so a text made only of such characters (emoji,
    CJK extension B) is refused by both — the model has nothing to read in it.
    """

    def kept(cp: int) -> bool:
        ch = chr(cp)
        return not (ch.isspace() or _INVISIBLE.match(ch) or unicodedata.category(ch) in {"Cc", "Cf", "Co", "Cs"})

    ranges: list[tuple[int, int]] = []
    for cp in range(0x10000):
        if not kept(cp):
            continue
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return "[" + "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges) + "]"
