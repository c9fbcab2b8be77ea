"""Learning-curve points from tracked runs: latest run per point, other models ignored."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from trackvision.errors import DataError
from trackvision.experiments.learning_curve import curve_points, write_learning_curve


def _run(run_id, start, model, pretrained, subset, accuracy, n_train=100):
    """One row of MLflow's ``search_runs`` table (params are strings there)."""
    return {
        "run_id": run_id,
        "start_time": pd.Timestamp(start, unit="s"),
        "params.model.name": model,
        "params.model.pretrained": pretrained,
        "params.train.subset": str(subset),
        "params.data.n_train": str(n_train),
        "metrics.test_accuracy": accuracy,
    }


def test_points_keep_the_latest_evaluated_run_per_setting(tmp_path) -> None:
    runs = [
        _run("old", 1, "m", "embedded", 0.1, 0.70),
        _run("new", 2, "m", "embedded", 0.1, 0.80),
        _run("scratch", 3, "m", "none", 0.1, 0.55),
        _run("full", 4, "m", "none", 1.0, 0.90, n_train=1000),
        _run("not-evaluated", 9, "m", "none", 0.5, None),
        _run("other-model", 9, "cnn", "none", 0.1, 0.99),
    ]
    points = curve_points(pd.DataFrame(runs), "m")
    assert [(p["pretrained"], p["subset"], p["run_id"]) for p in points] == [
        ("embedded", 0.1, "new"),
        ("none", 0.1, "scratch"),
        ("none", 1.0, "full"),
    ]
    png = write_learning_curve(points, "m", tmp_path)
    assert png.stat().st_size > 0
    assert json.loads((tmp_path / "learning_curve_m.json").read_text()) == points
    assert "| embedded | 10% | 100 | 0.8000 |" in (tmp_path / "learning_curve_m.md").read_text()


def test_where_keeps_one_sweep_apart_from_other_runs() -> None:
    a = _run("sweep", 1, "m", "none", 0.1, 0.6)
    b = _run("other", 2, "m", "none", 0.1, 0.9)
    a["params.train.image_size"], b["params.train.image_size"] = "64", "224"
    points = curve_points(pd.DataFrame([a, b]), "m", where={"train.image_size": "64"})
    assert [p["run_id"] for p in points] == ["sweep"]


def test_no_runs_says_how_to_make_them(tmp_path) -> None:
    with pytest.raises(DataError, match="dvc exp run --queue"):
        write_learning_curve([], "m", tmp_path)
    assert not list(tmp_path.iterdir())


def test_points_come_from_a_real_store(tmp_path) -> None:
    """finished_runs reads MLflow's own run table; unfinished runs are left out."""
    from mlflow.tracking import MlflowClient

    from trackvision.experiments.learning_curve import finished_runs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert finished_runs(uri, "synthetic_text").empty
    client = MlflowClient(uri)
    exp = client.create_experiment("synthetic_text")
    for pretrained, accuracy, status in (("embedded", 0.9, "FINISHED"), ("none", 0.6, "FAILED")):
        run = client.create_run(exp)
        for key, value in {
            "model.name": "m",
            "model.pretrained": pretrained,
            "train.subset": "0.5",
            "data.n_train": "50",
        }.items():
            client.log_param(run.info.run_id, key, value)
        client.log_metric(run.info.run_id, "test_accuracy", accuracy)
        client.set_terminated(run.info.run_id, status)
    points = curve_points(finished_runs(uri, "synthetic_text"), "m")
    assert [(p["pretrained"], p["subset"], p["n_train"], p["test_accuracy"]) for p in points] == [
        ("embedded", 0.5, 50, 0.9)
    ]
