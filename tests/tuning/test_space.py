"""tune: in params.yaml -> validated ranges and choices -> the overrides of one trial."""

from __future__ import annotations

import optuna
import pytest

from trackvision.config import parse_config
from trackvision.errors import ConfigError
from trackvision.tuning.experiment import set_args
from trackvision.tuning.space import check_space, suggest, with_overrides
from trackvision.tuning.study import best_of


def _with_space(params: dict, space: dict) -> dict:
    params["tune"]["space"] = space
    return params


def test_the_repository_params_hold_a_valid_search(params: dict) -> None:
    config = parse_config(params)
    check_space(config)
    assert config.tune.model in config.model_names
    assert config.tune.space["models.cnn.lr"].log


@pytest.mark.parametrize(
    ("dim", "words"),
    [
        ({"low": 1e-2, "high": 1e-4}, "low < high"),
        ({"low": 0, "high": 1, "log": True}, "log: true needs low > 0"),
        ({"choices": []}, "non-empty"),
        ({"low": 1, "high": 2, "step": 1}, "step"),
    ],
)
def test_a_bad_range_names_its_key(params: dict, dim: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=r"tune\.space") as err:
        parse_config(_with_space(params, {"train.lr": dim}))
    assert words in str(err.value)


def test_a_range_end_that_makes_bad_params_fails_before_any_trial(params: dict) -> None:
    config = parse_config(_with_space(params, {"train.batch_size": {"choices": [32, 0]}}))
    with pytest.raises(ConfigError, match=r"tune\.space\.train\.batch_size: 0 does not make"):
        check_space(config)


def test_the_tuned_model_must_be_trained(params: dict) -> None:
    params["tune"]["model"] = "vit_base_patch16_224"
    with pytest.raises(ConfigError, match=r"tune\.model: 'vit_base_patch16_224' is not in"):
        check_space(parse_config(params))


def test_suggestions_become_set_params_dvc_reads_back(params: dict) -> None:
    config = parse_config(params)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    values = suggest(trial, config.tune.space)
    assert 1e-4 <= values["models.cnn.lr"] <= 1e-2
    assert values["models.cnn.batch_size"] in (32, 64, 128)
    args = set_args(values)
    assert args[0] == "-S" and args[1].startswith("++models.cnn.lr=")
    spec = parse_config(with_overrides(config.raw, values)).model("cnn")
    assert spec.train.batch_size == values["models.cnn.batch_size"]
    assert spec.train.lr == values["models.cnn.lr"]


def test_the_objective_is_the_best_epoch_in_the_metric_direction() -> None:
    history = [{"val_accuracy": 0.6, "val_loss": 0.9}, {"val_accuracy": 0.8, "val_loss": 1.1}]
    assert best_of(history, "val_accuracy") == 0.8
    assert best_of(history, "val_loss") == 0.9
