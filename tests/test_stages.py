"""Each stage function on tiny data, end to end in a temporary folder, tracking to a temp store."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO, run_data_stages, tiny_params
from trackvision.cli import run
from trackvision.config import parse_config
from trackvision.data.packed import read_split
from trackvision.errors import DataError
from trackvision.layout import Layout
from trackvision.stages.balance import balance
from trackvision.stages.compare import compare
from trackvision.stages.evaluate import evaluate
from trackvision.stages.plan import plan
from trackvision.stages.train import train


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny pipeline (cnn only, MLflow into the folder's sqlite store), built once
    per module; each test gets its own copy (``tiny_run``)."""
    root = tmp_path_factory.mktemp("tiny")
    # MLflow's system-metrics monitor samples every 10 s by default: longer than a tiny training.
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "0.5"
    p = tiny_params(yaml.safe_load((REPO / "params.yaml").read_text()), **_TINY)
    config = _config_at(p, root)
    layout = Layout(root)
    run_data_stages(config, layout)
    train(config, layout, "cnn")
    evaluate(config, layout, "cnn")
    compare(config, layout)
    del os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"]
    return root


_TINY = {"train.models": ["cnn"], "mlflow.enabled": True}


def _config_at(p: dict, root: Path):
    p["mlflow"]["tracking_uri"] = f"sqlite:///{root / 'mlflow.db'}"
    return parse_config(p)


@pytest.fixture
def tiny_run(tiny_pipeline: Path, tmp_path: Path, params):
    """A copy of the finished tiny pipeline and its config: a test may change it freely."""
    root = tmp_path / "run"
    shutil.copytree(tiny_pipeline, root)
    return _config_at(tiny_params(params, **_TINY), root), Layout(root)


def test_stages_write_every_declared_output(tiny_run) -> None:
    _config, layout = tiny_run
    raw = layout.raw("synthetic_text")
    assert sorted(p.name for p in raw.iterdir()) == [
        "classes.json",
        "index.csv",
        "pack.bin",
        "source.json",
    ]  # a pack, whatever the count
    with open(raw / "index.csv") as fh:
        assert sum(r["label"] == "text" for r in csv.DictReader(fh)) == 40
    with open(layout.balanced / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert len({r["sha256"] for r in rows}) == len(rows)
    originals = read_split(layout.balanced, "train")
    augmented = read_split(layout.augmented, "train")
    assert len(augmented) == 2 * len(originals)  # originals + one copy
    assert (np.asarray(augmented.images[: len(originals)]) == np.asarray(originals.images)).all()
    for name in (
        "model.safetensors",
        "model.json",
        "preprocessing.json",
        "history.json",
        "train.json",
    ):
        assert (layout.model_dir("cnn") / name).is_file(), name
    headline = json.loads((layout.metrics_dir("cnn") / "test.json").read_text())
    assert headline.keys() == {"cnn"} and headline["cnn"].keys() == {"accuracy"}  # the DVC metric
    metrics = json.loads((layout.metrics_dir("cnn") / "evaluation.json").read_text())
    assert {"accuracy", "f1_weighted", "loss", "per_class", "confusion_matrix"} <= set(metrics)
    assert headline["cnn"]["accuracy"] == metrics["accuracy"]
    run = json.loads(layout.run_record("cnn").read_text())
    assert run["train_seconds"] > 0 and len(run["images_per_s"]) == 2
    assert metrics["n"] == len(read_split(layout.balanced, "test"))
    assert metrics["n_params"] > 0 and metrics["best_epoch"] in (1, 2)
    timing = json.loads(layout.timing_record("cnn").read_text())  # timed: not in metrics/
    assert timing["cpu_latency_ms"] > 0 and "cpu_latency_ms" not in metrics
    size = (layout.model_dir("cnn") / "model.safetensors").stat().st_size
    assert metrics["model_size_mb"] == pytest.approx(size / 1e6, abs=1e-3)
    records = json.loads((layout.metrics_dir("cnn") / "confusion.json").read_text())
    assert len(records) == metrics["n"] and set(records[0]) == {"actual", "predicted"}
    for name in ("confusion.png", "curves.png", "errors.png", "history.csv", "report.txt"):
        assert (layout.metrics_dir("cnn") / name).stat().st_size > 0, name
    assert re.search(r"^\| cnn +\| +0\.\d{4} \|", (layout.reports / "compare.md").read_text(), re.M)


def test_training_run_is_tracked_and_evaluation_joins_it(tiny_run) -> None:
    from mlflow.tracking import MlflowClient

    config, layout = tiny_run
    client = MlflowClient(config.mlflow.tracking_uri)
    exp = client.get_experiment_by_name("synthetic_text")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1  # evaluate added to the training run instead of starting another
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == str(config.train.lr)
    assert run.data.params["model.name"] == "cnn"
    assert run.data.params["preprocessing.mean"] == "(0.5, 0.5, 0.5)"
    assert len(run.data.params["data.manifest_sha256"]) == 64
    assert (
        run.data.tags["model_family"] == "cnn" and run.data.tags["data_source"] == "synthetic_text"
    )
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]
    # What the machine did and what the run came from, for the MLflow UI.
    assert int(run.data.params["torch.threads"]) >= 1
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), run.data.metrics
    (data,) = run.inputs.dataset_inputs
    assert data.dataset.name == "synthetic_text (balanced)"
    assert data.dataset.digest.startswith("manifest:")  # no dvc.lock in a bare folder
    assert json.loads(data.dataset.source)["tags"]["dvc_path"] == "data/balanced"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    test_json = json.loads((layout.metrics_dir("cnn") / "evaluation.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(test_json["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/confusion.png" in artifacts
    assert "evaluation/report.txt" in artifacts
    assert "evaluation/doctor.json" in artifacts
    # The doctor's verdict is a tag the run list can show; the intervals are metrics.
    report = json.loads((layout.metrics_dir("cnn") / "doctor.json").read_text())
    assert run.data.tags["doctor.status"] == report["status"] == test_json["doctor_status"]
    for finding in report["findings"]:
        assert run.data.tags[f"doctor.{finding['code']}"].startswith(finding["level"])
    low, high = test_json["accuracy_ci95"]
    assert run.data.metrics["test_accuracy_ci95_low"] == pytest.approx(low)
    assert run.data.metrics["test_accuracy_ci95_high"] == pytest.approx(high)
    assert run.data.metrics["test_n"] == test_json["n"]
    f1_low, f1_high = test_json["f1_weighted_ci95"]
    assert f1_low <= test_json["f1_weighted"] <= f1_high


def test_an_interrupted_training_resumes_in_the_same_mlflow_run(tiny_run) -> None:
    """Ctrl-C in epoch 2: the run is KILLED with epoch 1 saved; rerunning resumes that run."""
    from mlflow.tracking import MlflowClient

    from trackvision.tracking import open_tracker

    config, layout = tiny_run
    reference = json.loads((layout.model_dir("cnn") / "history.json").read_text())

    def interrupting(*args, **kwargs):
        tracker = open_tracker(*args, **kwargs)
        log_metrics = tracker.log_metrics

        def stop_in_epoch_2(metrics, step=None):
            if step == 2:
                raise KeyboardInterrupt
            log_metrics(metrics, step)

        tracker.log_metrics = stop_in_epoch_2
        return tracker

    with pytest.raises(KeyboardInterrupt):
        train(config, layout, "cnn", tracker_factory=interrupting)
    client = MlflowClient(config.mlflow.tracking_uri)
    exp = client.get_experiment_by_name("synthetic_text")
    killed = [r for r in client.search_runs([exp.experiment_id]) if r.info.status == "KILLED"]
    assert len(killed) == 1
    assert list((layout.root / ".trackvision" / "resume").glob("cnn-*.pt"))

    train(config, layout, "cnn")
    record = json.loads(layout.run_record("cnn").read_text())
    assert record["mlflow_run_id"] == killed[0].info.run_id
    run = client.get_run(killed[0].info.run_id)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
    assert steps == [1, 2]  # epoch 1 from before the interruption, epoch 2 after: one run
    resumed = json.loads((layout.model_dir("cnn") / "history.json").read_text())
    for before, after in zip(reference, resumed, strict=True):
        assert (
            before["val_loss"] == after["val_loss"] and before["train_loss"] == after["train_loss"]
        )
    assert not list((layout.root / ".trackvision" / "resume").glob("*.pt"))  # cleared when done


def test_subset_trains_on_a_stratified_share_with_its_copies(tiny_run) -> None:
    from trackvision.stages.train import _training_subset

    config, layout = tiny_run
    spec = config.model("cnn")
    originals = read_split(layout.balanced, "train")
    augmented = read_split(layout.augmented, "train")
    assert len(_training_subset(layout, spec)) == len(augmented)

    half_train = spec.train.model_copy(update=dict(subset=0.5))
    half = _training_subset(layout, spec.model_copy(update=dict(train=half_train)))
    counts = np.bincount(np.asarray(originals.labels))
    kept = [max(1, round(c * 0.5)) for c in counts]
    assert np.bincount(np.asarray(half.labels)).tolist() == [2 * k for k in kept]
    # The first half are originals; the second half their augmented copies, in the same order.
    n = sum(kept)
    first = np.asarray(half.images[:n])
    rows = [
        next(i for i in range(len(originals)) if np.array_equal(originals.images[i], img))
        for img in first
    ]
    assert np.array_equal(
        np.asarray(half.images[n:]), np.asarray(augmented.images)[np.array(rows) + len(originals)]
    )


def test_same_params_same_metrics(tmp_path: Path, params) -> None:
    p = tiny_params(params, **{"train.models": ["cnn"]})
    config = parse_config(p)
    results = []
    for run_dir in ("a", "b"):
        layout = Layout(tmp_path / run_dir)
        run_data_stages(config, layout)
        train(config, layout, "cnn")
        results.append(evaluate(config, layout, "cnn"))
    assert results[0]["accuracy"] == results[1]["accuracy"]
    assert results[0]["loss"] == results[1]["loss"]


def test_cli_bad_params_exit_non_zero_and_write_nothing(
    tmp_path: Path, params, monkeypatch, caplog
) -> None:
    bad = tiny_params(params, **{"train.lr": -1})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    monkeypatch.chdir(tmp_path)
    assert run(["download"]) == 2
    assert "train.lr" in caplog.text and "-1" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_cli_unknown_model_flag(tmp_path: Path, params, monkeypatch, caplog) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(params)))
    monkeypatch.chdir(tmp_path)
    assert run(["train", "--model", "nosuchnet"]) == 2
    assert "nosuchnet" in caplog.text


def test_cli_missing_inputs_say_what_to_run(tmp_path: Path, params, monkeypatch, caplog) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(params)))
    monkeypatch.chdir(tmp_path)
    assert run(["balance"]) == 1
    assert "data/plan.json: missing; run the plan stage first" in caplog.text
    caplog.clear()
    assert run(["plan"]) == 0
    assert run(["balance"]) == 1
    assert "download" in caplog.text


@pytest.mark.integration  # a whole second pipeline: not in make test-fast
def test_digits_source_runs_greyscale_through_the_pipeline(tmp_path: Path, params) -> None:
    p = tiny_params(params, **{"data.source": "digits", "train.models": ["cnn", "mobilevit_xxs"]})
    p["train"]["epochs"] = 1
    p["train"]["hflip"] = False  # a mirrored 2 is not a 2
    config = parse_config(p)
    layout = Layout(tmp_path)
    run_data_stages(config, layout)
    assert read_split(layout.balanced, "train").images.shape[-1] == 1
    for model in config.model_names:
        train(config, layout, model)
        metrics = evaluate(config, layout, model)
        assert metrics["classes"] == [str(d) for d in range(10)]
        assert len(metrics["confusion_matrix"]) == 10
    pre = json.loads((layout.model_dir("mobilevit_xxs") / "preprocessing.json").read_text())
    assert pre["input_size"] == [1, 32, 32] and len(pre["mean"]) == 1


def test_cli_lists_sources(capsys) -> None:
    assert run(["sources"]) == 0
    out = capsys.readouterr().out
    for name in ("synthetic_text", "digits", "fashion_mnist", "text_recognition", "folder"):
        assert name in out


def test_a_full_disk_while_saving_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, params, monkeypatch, caplog
) -> None:
    """ENOSPC while the checkpoint is written: exit 1, the path named, no half-written folder."""
    import errno

    import trackvision.training.checkpoint as checkpoint

    p = tiny_params(params, **{"train.models": ["cnn"]})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.chdir(tmp_path)
    for stage in ("download", "plan", "balance", "augment"):
        assert run([stage]) == 0

    def no_space(tensors, filename):
        Path(filename).write_bytes(b"partial")  # what a real full disk leaves: a torn file
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(checkpoint, "save_file", no_space)
    assert run(["train"]) == 1
    assert "No space left on device" in caplog.text and "model.safetensors" in caplog.text
    models = tmp_path / "models"
    assert not (models / "cnn").exists()
    assert [p.name for p in models.iterdir()] == []  # the temporary folder is gone too


def test_two_trainings_with_the_same_params_write_byte_identical_model_folders(tiny_run) -> None:
    """models/<model>/ holds only what params, data and code determine: no ids, no timings."""
    config, layout = tiny_run
    model_dir = layout.model_dir("cnn")
    first = {p.name: p.read_bytes() for p in sorted(model_dir.iterdir())}
    first_run = json.loads(layout.run_record("cnn").read_text())["mlflow_run_id"]
    train(config, layout, "cnn")
    second = {p.name: p.read_bytes() for p in sorted(model_dir.iterdir())}
    assert set(first) == set(second)
    assert [n for n in first if first[n] != second[n]] == []
    assert json.loads(layout.run_record("cnn").read_text())["mlflow_run_id"] != first_run


def test_evaluating_again_leaves_metrics_and_reports_byte_identical(tiny_run) -> None:
    """metrics/ and reports/compare.* vary only with the model (their DVC hashes are what
    `dvc exp show` shows); the timed latency goes to runs/<model>/ and MLflow."""
    config, layout = tiny_run

    def files() -> dict[str, bytes]:
        roots = (layout.root / "metrics", layout.reports)
        return {str(p): p.read_bytes() for r in roots for p in sorted(r.rglob("*")) if p.is_file()}

    first = files()
    timing = json.loads(layout.timing_record("cnn").read_text())
    evaluate(config, layout, "cnn")
    compare(config, layout)
    second = files()
    assert set(first) == set(second)
    assert [n for n in first if first[n] != second[n]] == []
    assert json.loads(layout.timing_record("cnn").read_text()).keys() == timing.keys()


def test_a_restored_model_evaluates_in_a_store_that_never_saw_it(tiny_run, tmp_path) -> None:
    """As after `dvc pull` or an experiment applied from another machine: evaluate records a new
    run that says where the model came from, and finds the training run where there is one."""
    from mlflow.tracking import MlflowClient

    from trackvision.training.checkpoint import weights_sha256

    config, layout = tiny_run
    digest = weights_sha256(layout.model_dir("cnn"))
    other = f"sqlite:///{tmp_path / 'other.db'}"
    elsewhere = config.model_copy(
        update=dict(mlflow=config.mlflow.model_copy(update=dict(tracking_uri=other)))
    )
    evaluate(elsewhere, layout, "cnn")
    client = MlflowClient(other)
    runs = client.search_runs([client.get_experiment_by_name("synthetic_text").experiment_id])
    assert len(runs) == 1
    assert runs[0].data.tags["weights_sha256"] == digest
    assert "restored" in runs[0].data.tags["model_origin"]
    assert "test_accuracy" in runs[0].data.metrics
    evaluate(elsewhere, layout, "cnn")  # the second time, that run is found again
    assert len(client.search_runs([runs[0].info.experiment_id])) == 1

    home = MlflowClient(config.mlflow.tracking_uri)
    exp = home.get_experiment_by_name("synthetic_text").experiment_id
    before = len(home.search_runs([exp]))
    evaluate(config, layout, "cnn")  # the store that trained it: its training run, no new one
    tagged = home.search_runs([exp], filter_string=f"tags.weights_sha256 = '{digest}'")
    assert len(home.search_runs([exp])) == before and len(tagged) == 1
    assert "model_origin" not in tagged[0].data.tags


def test_the_plan_keeps_its_bytes_unless_the_decode_size_changes(tmp_path: Path, params) -> None:
    """balance depends on data/plan.json, not on `models`: a trial's lr leaves it cached."""
    layout = Layout(tmp_path)
    p = tiny_params(params)
    plan(parse_config(p), layout)
    first = layout.plan.read_bytes()
    p["models"]["cnn"]["lr"] = 0.01
    plan(parse_config(p), layout)
    assert layout.plan.read_bytes() == first
    p["models"]["cnn"]["image_size"] = 96  # larger than data.image_size: decoded larger
    assert plan(parse_config(p), layout) == {"decode_size": 96}


def test_a_plan_file_that_is_not_the_stages_is_a_clear_error(tmp_path: Path, params) -> None:
    layout = Layout(tmp_path)
    layout.plan.parent.mkdir(parents=True)
    for text in ("{not json", '{"size": 64}', '{"decode_size": "64"}'):
        layout.plan.write_text(text)
        with pytest.raises(DataError, match=r"plan\.json: expected \{\"decode_size\""):
            balance(parse_config(tiny_params(params)), layout)
