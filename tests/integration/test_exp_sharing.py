"""Experiments shared between two machines: a bare git remote, a DVC remote, one MLflow store.

Machine A runs and pushes a named experiment; machine B, a fresh clone that shares only those
three, pulls it, sees it, applies it and gets A's model files to the byte, with nothing left
for `dvc repro` to do. The real `git`, `dvc` and `mlflow` programs, as a team would type them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import tiny_params
from tests.integration.repos import copy_repo, run, tree_digest

pytestmark = pytest.mark.integration

NAME = "lr-3e-3"


def _cnn_only(params: dict) -> dict:
    p = tiny_params(params, **{"train.models": ["cnn"], "mlflow.enabled": True})
    p["data"]["synthetic_text"]["count"] = 120
    return p


def test_an_experiment_pushed_from_one_machine_is_pulled_applied_and_tracked_on_another(
    tmp_path: Path,
) -> None:
    from mlflow.tracking import MlflowClient

    origin = tmp_path / "origin.git"
    a, env = copy_repo(tmp_path / "a", _cnn_only)
    # One store for the team (a server in real life); the DVC remote is the default one under
    # the shared HOME of this environment (an S3 bucket in real life).
    store = f"sqlite:///{tmp_path / 'team-mlflow.db'}"
    env = {**env, "MLFLOW_TRACKING_URI": store}
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path, env)
    run(["git", "remote", "add", "origin", str(origin)], a, env)
    run(["dvc", "repro"], a, env)
    run(["git", "add", "-A"], a, env)
    run(["git", "commit", "-q", "-m", "baseline"], a, env)
    run(["git", "push", "-q", "origin", "main"], a, env)
    run(["dvc", "push"], a, env)

    # Machine A: a named experiment, pushed (its git ref to origin, its outputs to the remote).
    run(["dvc", "exp", "run", "-n", NAME, "-S", "train.lr=3e-3"], a, env)
    run(["dvc", "exp", "push", "origin", NAME], a, env)
    models_on_a = tree_digest(a / "models")

    # Machine B: a fresh clone; the experiment comes by name.
    b = tmp_path / "b"
    run(["git", "clone", "-q", str(origin), str(b)], tmp_path, env)
    run(["dvc", "exp", "pull", "origin", NAME], b, env)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], b, env).stdout)
    exps = {
        e["name"]: e["data"]
        for baseline in shown
        for e in (baseline.get("experiments") or [])
        for e in e["revs"]
    }
    assert NAME in exps
    data = exps[NAME]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 3e-3
    accuracy = data["metrics"]["metrics/cnn/test.json"]["data"]["cnn"]["accuracy"]
    assert 0.0 <= accuracy <= 1.0

    run(["dvc", "exp", "apply", NAME], b, env)
    assert tree_digest(b / "models") == models_on_a  # from the DVC remote, not retrained
    status = run(["dvc", "status", "--json"], b, env).stdout
    assert json.loads(status) == {}, status  # so `dvc repro` has nothing to do

    # The team store holds A's runs under the experiment's name, with what B got.
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("synthetic_text")
    (found,) = client.search_runs([exp.experiment_id], f"tags.dvc_exp_name = '{NAME}'")
    assert found.info.status == "FINISHED"
    assert found.data.params["train.lr"] == "0.003"
    assert found.data.metrics["test_accuracy"] == pytest.approx(accuracy)
    weights = json.loads((b / "runs" / "cnn" / "train.json").read_text())["weights_sha256"]
    assert found.data.tags["weights_sha256"] == weights
