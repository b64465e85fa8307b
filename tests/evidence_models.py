"""Small in-memory classifiers for the evidence tests: a real TF-IDF half and a random one-layer encoder, built in
seconds without training a model (the fast lane cannot afford tests.conftest.tiny_artifact)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runtime.text import clean

DIRECTIONS = ["future_manufacturing", "future_information", "future_materials", "future_energy", "future_space",
              "future_health"]


def labelled(*files: str) -> tuple[list[str], np.ndarray]:
    rows = [json.loads(line) for name in files for line in Path(name).read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return [clean(r["text"]) for r in rows], np.array([[d in r["labels"] for d in DIRECTIONS] for r in rows], int)


def fit_lexical():
    """The TF-IDF half fitted on the seed units, the authored energy units and general rhetoric (~3 s)."""
    from runtime.lexical import LexicalModel

    texts, y = labelled("labels/seed_units.jsonl", "labels/authored/future_energy.jsonl",
                        "labels/authored/other_general.jsonl")
    return LexicalModel.fit(texts, y)


def tiny_classifier(lexical):
    """A classifier with a random one-layer encoder (character tokenizer, `query: ` prefix) and `lexical`."""
    import torch
    from transformers import BertTokenizer

    from runtime.classifier import Classifier
    from runtime.modeling import PooledBertConfig, PooledBertForSequenceClassification
    from training.model import char_vocab

    texts, _ = labelled("labels/seed_units.jsonl", "labels/authored/hk_tw_usage.jsonl")
    vocab = char_vocab(texts + ["query: "])
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True)
    torch.manual_seed(0)
    config = PooledBertConfig(pooling="mean", vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                              num_labels=len(DIRECTIONS))
    model = PooledBertForSequenceClassification(config)
    return Classifier(model, tokenizer, DIRECTIONS, [0.5] * 6, "other", max_length=64, text_prefix="query: ",
                      lexical=lexical)
