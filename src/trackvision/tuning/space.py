"""``tune.space`` -> Optuna suggestions -> the ``-S key=value`` overrides of one trial."""

from __future__ import annotations

import copy
from typing import Any

from trackvision.config import Config, SearchDimension, parse_config
from trackvision.errors import ConfigError


def suggest(trial: Any, space: dict[str, SearchDimension]) -> dict[str, Any]:
    """One value per key of the search space, chosen by the study's sampler."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.choices is not None:
            values[key] = trial.suggest_categorical(key, dim.choices)
        elif dim.is_int:
            values[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            values[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return values


def with_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of the params mapping with dotted keys set, as ``dvc exp run -S`` would."""
    params = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = params
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return params


def check_space(config: Config) -> None:
    """Every end of every range and every choice must make valid params: fail before trial 0."""
    tune = config.tune
    for key, dim in tune.space.items():
        ends = dim.choices if dim.choices is not None else [dim.low, dim.high]
        for value in ends:
            value = int(value) if dim.is_int else value
            try:
                parse_config(with_overrides(config.raw, {key: value}))
            except ConfigError as exc:
                raise ConfigError(
                    f"tune.space.{key}: {value!r} does not make valid params: {exc}"
                ) from None
    if tune.model not in config.model_names:
        raise ConfigError(
            f"tune.model: {tune.model!r} is not in train.models ({', '.join(config.model_names)})"
        )
