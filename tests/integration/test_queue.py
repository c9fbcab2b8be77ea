"""Queued experiments as users run them: a grid queued, two workers, one sqlite MLflow store."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.repos import client, run

pytestmark = pytest.mark.integration

GRID = {"train.lr": ["0.002", "0.0005"], "train.batch_size": ["8", "16"]}
GRID_MODELS = ["cnn", "vit"]


def _wait_for_queue(repo: Path, env: dict[str, str], timeout: float = 800) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo, env).stdout
        if not any(state in status for state in ("Queued", "Running")):
            return status
        time.sleep(3)
    raise AssertionError(f"queue not done after {timeout} s:\n{status}")


def _exp_rows(repo: Path, env: dict[str, str]) -> dict[str, dict]:
    """name -> {'params': params.yaml data, 'metrics': {file: data}} from `dvc exp show --json`."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    rows: dict[str, dict] = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                if rev.get("name"):
                    rows[rev["name"]] = {
                        "params": data["params"]["params.yaml"]["data"],
                        "metrics": {k: v["data"] for k, v in data.get("metrics", {}).items()},
                    }
    return rows


def test_grid_queue_on_two_workers_runs_the_queued_code_into_one_store(pipeline, tmp_path):
    repo, env = pipeline
    # The code at queue time must be the code that runs, even if the workspace changes after.
    marker = tmp_path / "queued-code-ran"
    init = repo / "src" / "trackvision" / "__init__.py"
    original = init.read_text()
    init.write_text(original + f"\nopen({str(marker)!r}, 'a').write('x')  # test marker\n")
    args = ["dvc", "exp", "run", "--queue", "-S", f"train.models=[{','.join(GRID_MODELS)}]"]
    for key, values in GRID.items():
        args += ["-S", f"{key}={','.join(values)}"]
    queued = run(args, repo, env).stdout
    init.write_text(original)
    assert queued.count("Queued experiment") == 4, queued

    started = time.monotonic()
    run(["dvc", "queue", "start", "-j", "2"], repo, env)
    status = _wait_for_queue(repo, env)
    wall = time.monotonic() - started
    assert "Failed" not in status, (
        status
        + subprocess.run(
            ["dvc", "queue", "logs", "--follow"], cwd=repo, env=env, capture_output=True, text=True
        ).stdout
    )
    assert marker.exists(), "the queued experiments ran the workspace's code, not their own"

    rows = {
        n: r
        for n, r in _exp_rows(repo, env).items()
        if r["params"]["train"]["models"] == GRID_MODELS
    }
    assert len(rows) == 4, sorted(rows)
    grid = {
        (str(r["params"]["train"]["lr"]), str(r["params"]["train"]["batch_size"]))
        for r in rows.values()
    }
    assert len(grid) == 4

    mlflow = client(repo)
    exp_id = mlflow.get_experiment_by_name("synthetic_text").experiment_id
    for name, row in rows.items():
        runs = mlflow.search_runs([exp_id], f"tags.dvc_exp_name = '{name}'")
        assert sorted(r.data.params["model.name"] for r in runs) == GRID_MODELS, name
        for r in runs:
            model = r.data.params["model.name"]
            assert r.info.status == "FINISHED"
            assert float(r.data.params["train.lr"]) == float(row["params"]["train"]["lr"])
            assert r.data.params["train.batch_size"] == str(row["params"]["train"]["batch_size"])
            steps = [m.step for m in mlflow.get_metric_history(r.info.run_id, "val_accuracy")]
            assert steps == [1, 2], (name, model, steps)
            shown = row["metrics"][f"metrics/{model}/test.json"]["accuracy"]
            assert r.data.metrics["test_accuracy"] == pytest.approx(shown), (name, model)
    print(f"4 queued experiments on 2 workers: {wall:.0f} s")
