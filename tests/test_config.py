"""params.yaml validation: defaults load; every bad value fails naming key, value and choices."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, tiny_params
from trackvision.config import load_config, parse_config
from trackvision.errors import ConfigError


def test_repository_params_are_valid() -> None:
    config = load_config(REPO / "params.yaml")
    assert config.data.source == "synthetic_text"
    assert config.model_names == ("cnn", "vit", "mobilevit_xxs")
    assert config.balance.split == {"train": 0.7, "val": 0.15, "test": 0.15}


def test_model_settings_override_shared_ones(params) -> None:
    params["models"]["vit"]["lr"] = 0.0005
    config = parse_config(params)
    assert config.model("vit").train.lr == 0.0005
    assert config.model("cnn").train.lr == params["train"]["lr"]
    # keys that are not hyperparameters go to the builder
    assert config.model("vit").arch["patch_size"] == params["models"]["vit"]["patch_size"]


def test_any_timm_model_gets_defaults(params) -> None:
    params["train"]["models"] = ["resnet18"]
    params["models"]["resnet18"] = None  # `resnet18:`, an empty entry
    spec = parse_config(params).model("resnet18")
    assert spec.pretrained == "none" and spec.arch == {}


@pytest.mark.parametrize(
    ("dotted", "value", "fragments"),
    [
        ("data.source", "imagenet", ["data.source", "'imagenet'", "synthetic_text", "digits"]),
        ("train.models", ["cnn", "resnet_9000"], ["train.models", "'resnet_9000'", "timm"]),
        ("train.lr", -0.1, ["train.lr", "-0.1", "> 0"]),
        ("train.epochs", "ten", ["train.epochs", "'ten'", "integer"]),
        (
            "balance.split",
            {"train": 0.8, "val": 0.15, "test": 0.15},
            ["balance.split", "sum to 1", "1.1"],
        ),
        ("balance.strategy", "smote", ["balance.strategy", "'smote'", "undersample"]),
        ("train.device", "tpu", ["train.device", "'tpu'", "cuda"]),
        ("train.bogus", 1, ["train", "bogus", "allowed"]),
        ("models.cnn.widht", 32, ["models.cnn", "widht", "width"]),
        ("models.mobilevit_xxs.pretrained", "imagenet", ["pretrained", "'imagenet'", "hub"]),
        ("data.synthetic_text.count", 2, ["data.synthetic_text.count", "2"]),
        ("train.hflip", 1, ["train.hflip", "1", "true or false"]),
        ("augment.hflip", 1.5, ["augment.hflip", "1.5", "<= 1"]),
        ("train.models", "cnn", ["train.models", "'cnn'", "list of model names"]),
        # DVC's train and evaluate stages depend on models.<name>: it must exist, undotted.
        ("train.models", ["cnn", "resnet18"], ["models.resnet18", "missing", "resnet18: {}"]),
        ("train.models", ["cnn", "resnet18.a1_in1k"], ["train.models", "'.'", "'resnet18'"]),
        ("download.checksums", {"a.gz": "xyz"}, ["download.checksums", "a.gz", "md5"]),
        ("mlflow.registered_model", "{model}", ["mlflow.registered_model", "{source}"]),
        ("evaluate.batch_size", 0, ["evaluate.batch_size", "0", ">= 1"]),
        ("data.bogus", 1, ["data", "bogus", "allowed", "image_size"]),
    ],
)
def test_bad_values_name_key_value_and_choices(params, dotted, value, fragments) -> None:
    bad = tiny_params(params, **{dotted: value})
    with pytest.raises(ConfigError) as err:
        parse_config(bad)
    for fragment in fragments:
        assert fragment in str(err.value), f"{fragment!r} not in {err.value}"


def test_missing_key_is_named(params) -> None:
    del params["train"]["batch_size"]
    with pytest.raises(ConfigError, match=r"train\.batch_size: missing"):
        parse_config(params)


def test_missing_section_is_named(params) -> None:
    del params["augment"]
    with pytest.raises(ConfigError, match="augment"):
        parse_config(params)


def test_scientific_notation_string_is_a_number(params) -> None:
    params["train"]["lr"] = "1e-4"  # YAML 1.1 reads 1e-4 without a dot as a string
    assert parse_config(params).train.lr == pytest.approx(1e-4)


def test_a_number_yaml_reads_as_a_string_is_a_number(params) -> None:
    """YAML 1.1 reads 1e-4 without a dot as a string; it is plainly a number."""
    assert parse_config(tiny_params(params, **{"train.lr": "1e-4"})).train.lr == 1e-4


def test_an_unknown_section_is_named(params) -> None:
    with pytest.raises(ConfigError, match=r"params.yaml: unknown key\(s\) trian; allowed: data"):
        parse_config({**params, "trian": {}})
