import pytest

from training.config import Config, ConfigError, load_config


def test_shipped_configs_load() -> None:
    small = load_config("configs/offline-small.yaml")
    assert small.model.name_or_path == "scratch"
    assert small.model.scratch.layers == 4 and small.model.scratch.hidden == 256
    real = load_config("configs/bert-base-chinese.yaml")
    assert real.model.name_or_path == "bert-base-chinese"


def test_overrides_are_typed() -> None:
    cfg = load_config("configs/offline-small.yaml", ["train.epochs=2", "train.learning_rate=1e-3",
                                                     "data.label_files=[a.jsonl, b.jsonl]", "seed=7", "name=x"])
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert cfg.train.learning_rate == pytest.approx(1e-3)
    assert cfg.data.label_files == ["a.jsonl", "b.jsonl"]
    assert cfg.seed == 7 and cfg.resolved_output_dir.name == "x"


def test_optional_fields_take_null_or_a_value() -> None:
    cfg = load_config("configs/offline-e5-small.yaml", ["model.dropout=0"])
    assert cfg.model.dropout == 0.0 and isinstance(cfg.model.dropout, float)
    assert load_config("configs/offline-e5-small.yaml", ["model.dropout=null"]).model.dropout is None


def test_round_trip_through_dict() -> None:
    cfg = load_config("configs/offline-small.yaml", ["model.scratch.layers=2"])
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown config key.*train.epoch.*train.epochs"),
        ("bogus=1", "unknown config key.*bogus"),
        ("train.batch_size=lots", "train.batch_size must be an integer"),
        ("train.batch_size=2.5", "train.batch_size must be an integer"),
        ("train.precision=fp8", "train.precision must be one of"),
        ("model.scratch.heads=3", "divisible"),
        ("data.val_fraction=0.9", "val_fraction"),
        ("train.epochs", "not of the form key=value"),
        ("train=3", "train must be a mapping"),
        ("model.dropout=1.5", "model.dropout must be null"),
        ("model.dropout=lots", "model.dropout must be a number"),
        ("model.freeze_layers=-1", "model.freeze_layers must be 0 or more"),
    ],
)
def test_bad_overrides_are_rejected_clearly(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("configs/offline-small.yaml", [override])


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("configs/nope.yaml")


def test_defaults_are_the_default_config() -> None:
    # A key left out of a config means what configs/offline-e5-small.yaml says; the other configs state
    # where they differ, so changing a default can never silently retune them.
    assert Config() == load_config("configs/offline-e5-small.yaml")
    small = load_config("configs/offline-small.yaml")
    assert (small.model.pooling, small.model.freeze_layers, small.model.tfidf_fusion) == ("cls", 0, False)
