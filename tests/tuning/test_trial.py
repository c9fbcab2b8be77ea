"""A training process that a search started: it reports to its Optuna trial and can be pruned."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from tests.conftest import tiny_project
from trackvision.stages.train import train
from trackvision.tuning.trial import TRIAL_ENV, TrialLink, pruner_from_env


def test_no_search_no_pruner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRIAL_ENV, raising=False)
    assert pruner_from_env() is None


@pytest.fixture
def searched(tmp_path: Path, params: dict):
    """A tiny project ready for train, and an empty study in a sqlite file beside it."""
    config, layout = tiny_project(tmp_path, params)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    return config, layout, storage, study


def test_a_pruned_trial_still_ends_as_a_finished_run_marked_pruned(
    searched, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, layout, storage, study = searched
    trial = _behind_an_unreachable_leader(study, storage, monkeypatch, warmup_epochs=1)

    summary = train(config, layout, "cnn")

    assert config.model("cnn").train.epochs == 2
    assert summary["pruned_at_epoch"] == 1 and summary["epochs_run"] == 1
    train_json = json.loads((layout.model_dir("cnn") / "train.json").read_text())
    assert train_json["pruned_at_epoch"] == 1  # the model folder says it was cut short
    history = json.loads((layout.model_dir("cnn") / "history.json").read_text())
    frozen = study.get_trials()[trial.number]
    assert frozen.intermediate_values == {1: history[0]["val_accuracy"]}
    assert frozen.user_attrs["pruned_at_epoch"] == 1
    run_id = json.loads(layout.run_record("cnn").read_text())["mlflow_run_id"]
    run = mlflow_client(tmp_path).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["tune.study"] == "s" and run.data.tags["tune.trial"] == "1"
    assert run.data.tags["tune.pruned"] == "true"


def test_an_unpruned_trial_reports_every_epoch_and_runs_them_all(
    searched, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, layout, storage, study = searched
    trial = study.ask()  # the first trial: nothing to compare with, never pruned
    link = TrialLink(storage, "s", trial.number, "val_loss", "median", 0, 0)
    monkeypatch.setenv(TRIAL_ENV, link.to_env())

    summary = train(config, layout, "cnn")

    assert "pruned_at_epoch" not in summary and summary["epochs_run"] == 2
    history = json.loads((layout.model_dir("cnn") / "history.json").read_text())
    frozen = study.get_trials()[0]
    assert frozen.intermediate_values == {r["epoch"]: r["val_loss"] for r in history}


def test_a_trial_is_never_pruned_after_its_last_epoch(
    searched, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind an unreachable leader, but pruning is warmed up only by the last epoch: the trial
    reports both epochs and completes; pruning then would have saved nothing."""
    config, layout, storage, study = searched
    # Optuna's warm-up: no pruning while the step is below 2, so only after the last epoch.
    trial = _behind_an_unreachable_leader(study, storage, monkeypatch, warmup_epochs=2)

    summary = train(config, layout, "cnn")

    assert config.model("cnn").train.epochs == 2
    assert "pruned_at_epoch" not in summary and summary["epochs_run"] == 2
    frozen = study.get_trials()[trial.number]
    assert sorted(frozen.intermediate_values) == [1, 2]
    assert "pruned_at_epoch" not in frozen.user_attrs


def _behind_an_unreachable_leader(
    study: optuna.Study, storage: str, monkeypatch: pytest.MonkeyPatch, warmup_epochs: int
) -> optuna.Trial:
    """A finished trial no accuracy can reach (> 1) at both epochs, then the trial this
    process trains for: the median pruner stops it at the first epoch its warm-up allows."""
    leader = study.ask()
    for epoch in (1, 2):
        leader.report(1.01, epoch)
    study.tell(leader, 1.01)
    trial = study.ask()
    link = TrialLink(storage, "s", trial.number, "val_accuracy", "median", 1, warmup_epochs)
    monkeypatch.setenv(TRIAL_ENV, link.to_env())
    return trial


def mlflow_client(root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
