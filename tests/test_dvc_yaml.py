"""dvc.yaml cannot drift from the code: each stage lists the project code it imports and the params
it reads, and nothing it does not.

Modules: every ``trackvision`` module a stage's module imports (at the top or inside a function,
found by ``modulefinder``), closed over the project's own imports. Params: each stage runs on tiny
data with a ``Config`` that records every setting the stage reads.
"""

from __future__ import annotations

import dataclasses
import modulefinder
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from tests.conftest import tiny_params
from trackvision.config import Config, parse_config
from trackvision.layout import Layout
from trackvision.stage_environment import STAGE_ENVIRONMENT

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

# Project modules that cannot change what a stage writes, so no stage lists them: exception
# classes, how a file is renamed into place, where files go (dvc.yaml names the paths), the
# parsing of params.yaml (DVC tracks the values themselves) and what is
# recorded in MLflow (not an output).
PLUMBING = (
    "trackvision.errors",
    "trackvision.atomic",
    "trackvision.layout",
    "trackvision.config",
    "trackvision.tracking",
    "trackvision.data.fetch",  # how bytes arrive; their checksums are checked against the params
)
# Params no stage lists on purpose: where downloads come from and are cached (the files are
# checked by checksum), how many decoding processes (the output is the same for any value), and
# the tracking store.
NOT_INPUTS = ("download", "data.workers", "mlflow")

STAGE_MODULES = {
    "download": "trackvision.stages.download",
    "plan": "trackvision.stages.plan",
    "balance": "trackvision.stages.balance",
    "augment": "trackvision.stages.augment",
    "train": "trackvision.stages.train",
    "evaluate": "trackvision.stages.evaluate",
    "compare": "trackvision.stages.compare",
}


def _is(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def project_imports(module: str) -> set[str]:
    """Every ``trackvision`` module ``module`` imports, directly or through project modules."""
    # Plumbing is excluded, so its own imports (config's of the registries) are not followed.
    excludes = ["torch", "timm", "mlflow", *PLUMBING]
    finder = modulefinder.ModuleFinder(path=[str(SRC)], excludes=excludes)
    finder.run_script(str(SRC / (module.replace(".", "/") + ".py")))
    return {
        name
        for name, mod in finder.modules.items()
        if name.startswith("trackvision")
        and mod.__file__
        and not mod.__file__.endswith("__init__.py")
    } | {module}


def _file(module: str) -> str:
    return "src/" + module.replace(".", "/") + ".py"


def _stages(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """dvc.yaml's stages, ``${...}`` filled from ``params`` and ``${item}`` with the first model."""
    text = (REPO / "dvc.yaml").read_text()
    text = text.replace("${data.source}", params["data"]["source"])
    text = text.replace("${data.folder.path}", params["data"]["folder"]["path"])
    text = text.replace("${item}", params["train"]["models"][0])
    stages = yaml.safe_load(text)["stages"]
    return {name: body.get("do", body) for name, body in stages.items()}


def _listed_params(stage: dict[str, Any]) -> set[str]:
    return {p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])}


@pytest.fixture(scope="module")
def repo_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.mark.parametrize("stage", list(STAGE_MODULES))
def test_every_module_a_stage_imports_is_a_dependency(stage: str, repo_params) -> None:
    body = _stages(repo_params)[stage]
    deps = [d for d in body.get("deps", []) if d.startswith("src/")]
    imported = {m for m in project_imports(STAGE_MODULES[stage]) if not _is(m, PLUMBING)}
    if stage in STAGE_ENVIRONMENT:  # the command's entry point sets what the stage computes with
        imported.add("trackvision.stage_environment")
    missing = sorted(m for m in imported if not any(_file(m).startswith(d) for d in deps))
    assert not missing, f"dvc.yaml stage {stage}: add these to its deps: {missing}"
    unused = sorted(d for d in deps if not any(_file(m).startswith(d) for m in imported))
    assert not unused, f"dvc.yaml stage {stage}: lists code it never imports: {unused}"


class Recorder:
    """Wraps a Config (or one of its sections) and records the dotted key of every read."""

    __slots__ = ("_obj", "_path", "_seen")  # no __dict__ of its own: reading it reads the section

    def __init__(self, obj: Any, path: str, seen: set[str]) -> None:
        self._obj, self._path, self._seen = obj, path, seen

    def __getattr__(self, name: str) -> Any:
        if isinstance(self._obj, Config):
            return self._config_attr(name)
        value = getattr(self._obj, name)
        if name == "__dict__":  # every field of the section is read
            self._seen.update(f"{self._path}.{field}" for field in value)
            return value
        key = f"{self._path}.{name}"
        if isinstance(value, BaseModel) or (
            dataclasses.is_dataclass(value) and not isinstance(value, type)
        ):
            return Recorder(value, key, self._seen)
        self._seen.add(self._path if callable(value) else key)  # a method reads its section
        return value

    def _config_attr(self, name: str) -> Any:
        config: Config = self._obj
        if name == "model":  # per-model settings: train.* overridden under models.<name>

            def model(model_name: str) -> Any:
                return _SpecRecorder(config.model(model_name), f"models.{model_name}", self._seen)

            return model
        derived = {
            "model_names": {"train.models"},
            "decode_size": {"data.image_size", "train.models", "train.image_size", "models"},
            "raw": set(),  # read only to log upstream params to MLflow
        }
        if name in derived:
            self._seen.update(derived[name])
            return getattr(config, name)
        if name == "input_side":
            self._seen.update({"train.image_size", "models"})
            return config.input_side
        return Recorder(getattr(config, name), name, self._seen)


class _SpecRecorder:
    """One model's resolved settings: every read reads its ``models.<name>`` block (name, arch,
    pretrained, the train.* overrides and its input side)."""

    __slots__ = ("_block", "_seen", "_spec")

    def __init__(self, spec: Any, block: str, seen: set[str]) -> None:
        self._spec, self._block, self._seen = spec, block, seen

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._spec, name)
        self._seen.add(self._block)
        if name == "train":
            return Recorder(value, "train", self._seen)
        return value


def _as_param(key: str, source: str) -> str:
    """The params.yaml key a setting comes from: ``data.options.*`` is ``data.<source>``; the
    channels and the official split follow from the source itself."""
    if _is(key, ("data.options",)):
        return f"data.{source}"
    if key in ("data.channels", "data.presplit"):
        return "data.source"
    return key


def _covered(key: str, listed: set[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in listed)


@pytest.fixture(scope="module")
def reads(tmp_path_factory, repo_params) -> dict[str, set[str]]:
    """The settings each stage read while running on tiny data."""
    from trackvision.stages.augment import augment
    from trackvision.stages.balance import balance
    from trackvision.stages.compare import compare
    from trackvision.stages.download import download
    from trackvision.stages.evaluate import evaluate
    from trackvision.stages.plan import plan
    from trackvision.stages.train import train

    config = parse_config(tiny_params(repo_params, **{"train.models": ["cnn"]}))
    layout = Layout(tmp_path_factory.mktemp("drift"))
    calls = {
        "download": lambda c: download(c, layout),
        "plan": lambda c: plan(c, layout),
        "balance": lambda c: balance(c, layout),
        "augment": lambda c: augment(c, layout),
        "train": lambda c: train(c, layout, "cnn"),
        "evaluate": lambda c: evaluate(c, layout, "cnn"),
        "compare": lambda c: compare(c, layout),
    }
    seen: dict[str, set[str]] = {}
    for name, call in calls.items():
        seen[name] = set()
        call(Recorder(config, "", seen[name]))
    return seen


@pytest.mark.parametrize("stage", list(STAGE_MODULES))
def test_every_param_a_stage_reads_is_listed_and_no_other(stage: str, reads, repo_params) -> None:
    listed = _listed_params(_stages(repo_params)[stage])
    read = {k for k in reads[stage] if not _is(k, NOT_INPUTS)}
    # data.<source> stands for the source's options block: reading any of it reads the block.
    read = {_as_param(k, repo_params["data"]["source"]) for k in read}
    missing = sorted(k for k in read if not _covered(k, listed))
    assert not missing, f"dvc.yaml stage {stage}: add these params: {missing}"
    unused = sorted(
        p for p in listed if not any(_covered(k, {p}) or _covered(p, {k}) for k in read)
    )
    assert not unused, f"dvc.yaml stage {stage}: lists params it never reads: {unused}"
