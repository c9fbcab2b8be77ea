"""The real thing: `dvc repro` and `dvc exp run` in a copy of this repository, read back via MLflow.

Tiny params keep it to a few minutes; everything else (DVC, the stage commands, the sqlite
tracking store, artifacts on disk) is exactly what a user runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_params
from tests.integration.conftest import MODELS
from tests.integration.repos import client as _client
from tests.integration.repos import copy_repo
from tests.integration.repos import run as _run

pytestmark = pytest.mark.integration


def test_real_dataset_through_dvc_repro_from_a_mirror(tmp_path: Path) -> None:
    """text_recognition via download.mirror on loopback: download -> balance -> augment."""
    from tests.data import fake_archives as fake
    from tests.loopback import Served, serve

    flickr = fake.flickr8k()
    files = {"MSRA-TD500.zip": fake.msra_td500(), "Flickr8k_Dataset.zip": flickr}
    with serve(Served(files=files)) as srv:

        def mirrored(params: dict) -> dict:
            p = tiny_params(params, **{"data.source": "text_recognition"})
            p["data"]["text_recognition"] = {"per_class": 8, "seed": 3}
            p["download"].update(
                mirror=srv.url,
                cache_dir=str(tmp_path / "cache"),
                checksums={"Flickr8k_Dataset.zip": fake.md5(flickr)},
            )
            return p

        repo_dir, env = copy_repo(tmp_path / "repo", mirrored)
        _run(["dvc", "repro", "augment"], repo_dir, env)
    raw = repo_dir / "data" / "raw" / "text_recognition"
    assert len(list((raw / "text").glob("IMG_*.JPG"))) == 8
    assert len(list((raw / "no_text").glob("*.jpg"))) == 8
    report = json.loads((repo_dir / "metrics" / "balance.json").read_text())
    assert report["before"] == {"no_text": 8, "text": 8}
    assert sorted(n for n, _ in srv.requests) == ["Flickr8k_Dataset.zip", "MSRA-TD500.zip"]


def test_a_repro_into_a_pipe_logs_lines_not_progress_bar_frames(pipeline) -> None:
    repo_dir, _ = pipeline
    log = (repo_dir.parent / "repro.log").read_text()
    assert "\r" not in log, "a progress bar drew frames into a pipe"
    epochs = [line for line in log.splitlines() if " train loss " in line and " val loss " in line]
    assert len(epochs) >= len(MODELS), log[-2000:]  # one line per epoch of each model


def test_repro_tracks_one_complete_run_per_model(pipeline) -> None:
    repo_dir, _ = pipeline
    client = _client(repo_dir)
    exp = client.get_experiment_by_name("synthetic_text")
    assert exp is not None
    assert exp.artifact_location == (repo_dir / "mlruns").resolve().as_uri()
    # Experiments other tests queue land in the same store: the repro's runs are "@ workspace".
    runs = client.search_runs([exp.experiment_id], "attributes.run_name LIKE '% @ workspace'")
    assert sorted(r.data.params["model.name"] for r in runs) == sorted(MODELS)
    lock = yaml.safe_load((repo_dir / "dvc.lock").read_text())["stages"]["balance"]["outs"]
    balanced = next(o["md5"] for o in lock if o["path"] == "data/balanced").removesuffix(".dir")
    for run in runs:
        # The data version in the UI's Dataset column: DVC's hash of data/balanced.
        (data,) = run.inputs.dataset_inputs
        assert data.dataset.digest == balanced
        name = run.data.params["model.name"]
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"{name} @ workspace"
        assert run.data.params["train.lr"] == "0.001"
        assert run.data.params["train.epochs"] == "2"
        assert run.data.tags["data_source"] == "synthetic_text"
        assert len(run.data.tags["git_commit"]) == 40
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert steps == [1, 2]
        test_json = json.loads((repo_dir / "metrics" / name / "test.json").read_text())
        assert run.data.metrics["test_accuracy"] == pytest.approx(test_json[name]["accuracy"])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
        assert {"evaluation/confusion.png", "evaluation/report.txt"} <= artifacts
        local = Path(client.download_artifacts(run.info.run_id, "evaluation/confusion.png"))
        assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    models = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert {m.source_run_id for m in models} >= {r.info.run_id for r in runs}


def test_second_repro_does_nothing_and_dvc_reads_metrics_and_plots(pipeline) -> None:
    repo_dir, env = pipeline
    out = _run(["dvc", "repro"], repo_dir, env)
    assert "Data and pipelines are up to date" in out.stdout
    metrics = json.loads(_run(["dvc", "metrics", "show", "--json"], repo_dir, env).stdout)
    shown = json.dumps(metrics)
    for name in MODELS:
        assert f"metrics/{name}/test.json" in shown
    _run(["dvc", "plots", "show", "-o", "plots_html"], repo_dir, env)
    html = (repo_dir / "plots_html" / "index.html").read_text()
    assert "confusion.json" in html and "history.csv" in html


def test_a_change_to_one_models_settings_leaves_the_other_models_cached(pipeline) -> None:
    """What a search's trial or `dvc exp apply` of one changes: that model's stages (and plan,
    which reads every model's input side), never another model's training."""
    repo_dir, env = pipeline
    params_file = repo_dir / "params.yaml"
    before = params_file.read_text()
    edited = yaml.safe_load(before)
    edited["models"]["cnn"]["lr"] = 0.0123
    params_file.write_text(yaml.safe_dump(edited, sort_keys=False))
    try:
        status = json.loads(_run(["dvc", "status", "--json"], repo_dir, env).stdout)
    finally:
        params_file.write_text(before)
    assert set(status) == {"plan", "train@cnn", "evaluate@cnn"}, status
    assert _run(["dvc", "status"], repo_dir, env).stdout.strip().endswith("up to date.")


def test_champion_is_the_best_registered_version_and_labels_photos(pipeline, monkeypatch) -> None:
    import mlflow
    import numpy as np
    import pandas as pd

    from trackvision.data.images import encode_png
    from trackvision.data.packed import read_classes, read_split
    from trackvision.tracking import use_tracking_uri

    repo_dir, _ = pipeline
    client = _client(repo_dir)
    name = "synthetic_text-classifier"
    versions = client.search_model_versions(f"name = '{name}'")
    assert {v.tags["model_name"] for v in versions} >= set(MODELS)
    champion = client.get_model_version_by_alias(name, "champion")
    best = max(float(v.tags["test_accuracy"]) for v in versions)
    assert float(champion.tags["test_accuracy"]) == best

    # Not MLFLOW_TRACKING_URI: a URI set in this process by an earlier test would win over it
    # and `@champion` would resolve in that test's store.
    use_tracking_uri(f"sqlite:///{repo_dir / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # code + safetensors
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    test = read_split(repo_dir / "data" / "balanced", "test")
    photos = pd.DataFrame({"image": [encode_png(image) for image in np.asarray(test.images)]})
    labels = model.predict(photos)["label"]
    classes = read_classes(repo_dir / "data" / "balanced")
    accuracy = float((labels.map(classes.index) == np.asarray(test.labels)).mean())
    assert accuracy == pytest.approx(float(champion.tags["test_accuracy"]), abs=1e-6)
