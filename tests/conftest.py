"""Shared fixtures: the repository's params, and a tiny config for fast stage tests."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from trackvision.config import Config, parse_config
from trackvision.layout import Layout

REPO = Path(__file__).resolve().parents[1]

# Under pytest-xdist (make test), each worker gets its share of the cores, as queued experiments
# do: workers that each use every core fight over them. Set before torch starts its thread pool.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One xdist group per test module, and one for every test of the shared pipeline, so that
    each module- or session-scoped fixture is built once, by the worker that runs its tests."""
    for item in items:
        group = "pipeline" if "pipeline" in item.fixturenames else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def _no_ambient_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never write to a developer's real MLflow store or pick up a DVC run's context.
    for var in (
        "MLFLOW_TRACKING_URI",
        "DVC_ROOT",
        "DVC_EXP_NAME",
        "DVC_STAGE",
        "DVC_EXP_BASELINE_REV",
        "TRACKVISION_STAGE_SERVER",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def params() -> dict[str, Any]:
    """A fresh copy of the repository's params.yaml as a dict."""
    return copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))


def tiny_params(params: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The repository's params shrunk to seconds of work."""
    p = copy.deepcopy(params)
    p["data"]["synthetic_text"].update(count=80, size=32)
    p["data"]["image_size"] = 32
    p["data"]["min_per_class"] = 5
    p["train"].update(epochs=2, batch_size=16, image_size=32, patience=0)
    p["models"]["vit"].update(dim=32, depth=1, heads=2)
    p["mlflow"]["enabled"] = False
    for dotted, value in overrides.items():
        node = p
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return p


def run_data_stages(config: Config, layout: Layout) -> None:
    """download, plan, balance and augment in this process, in dvc.yaml's order: the data a
    test's training needs, without DVC's seconds per stage."""
    from trackvision.stages.augment import augment
    from trackvision.stages.balance import balance
    from trackvision.stages.download import download
    from trackvision.stages.plan import plan

    for stage in (download, plan, balance, augment):
        stage(config, layout)


def tiny_project(root: Path, params: dict[str, Any]) -> tuple[Config, Layout]:
    """A project folder with the tiny params (cnn only, MLflow into ``root``/mlflow.db) in its
    params.yaml and the data stages run: ready for ``train``."""
    p = tiny_params(params, **{"train.models": ["cnn"], "mlflow.enabled": True})
    p["mlflow"]["tracking_uri"] = f"sqlite:///{root / 'mlflow.db'}"
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    config, layout = parse_config(p), Layout(root)
    run_data_stages(config, layout)
    return config, layout


@pytest.fixture
def tiny_config(params: dict[str, Any]) -> Config:
    return parse_config(tiny_params(params))
