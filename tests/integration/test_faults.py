"""Runs that survive faults, with the real programs: SIGKILL under `dvc repro`, Ctrl-C, a full disk.

A killed `dvc repro` must cost at most the epoch in flight: rerunning it resumes from the last
saved epoch, in the same MLflow run, and ends with the metrics of a run that was never killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import run_data_stages, tiny_params
from tests.integration.repos import client as _client
from tests.integration.repos import copy_repo
from tests.integration.repos import run as _run
from trackvision.config import load_config
from trackvision.layout import Layout

pytestmark = pytest.mark.integration

EPOCHS = 15


def _slow_tiny(params: dict) -> dict:
    """cnn only, with enough epochs (~0.4 s each) that a signal sent after the first saved epoch
    lands mid-training even on a busy machine."""
    p = tiny_params(params, **{"train.models": ["cnn"], "mlflow.enabled": True})
    p["data"]["synthetic_text"]["count"] = 200
    p["train"].update(epochs=EPOCHS, batch_size=8)
    return p


def _wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"finished (exit {proc.returncode}) before {pattern} appeared")
        time.sleep(0.02)
    raise AssertionError(f"{pattern} did not appear within {timeout} s")


def _history(repo_dir: Path) -> list[dict]:
    rows = json.loads((repo_dir / "models" / "cnn" / "history.json").read_text())
    return rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny pipeline, never interrupted."""
    repo_dir, env = copy_repo(tmp_path_factory.mktemp("reference") / "repo", _slow_tiny)
    _run(["dvc", "repro"], repo_dir, env)
    return repo_dir


def test_sigkill_during_training_then_repro_resumes_to_the_same_result(
    tmp_path: Path, reference: Path
) -> None:
    repo_dir, env = copy_repo(tmp_path / "repo", _slow_tiny)
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=repo_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill reaches DVC and the stage
    )
    state = _wait_for(".trackvision/resume/cnn-*.pt", repo_dir, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (repo_dir / "models" / "cnn" / "model.safetensors").exists()
    assert state.exists()  # the last finished epoch survived the kill

    out = _run(["dvc", "repro"], repo_dir, env)
    assert "resuming from the state saved after epoch" in out.stdout + out.stderr
    assert _history(repo_dir) == _history(reference)
    test = json.loads((repo_dir / "metrics" / "cnn" / "evaluation.json").read_text())
    ref = json.loads((reference / "metrics" / "cnn" / "evaluation.json").read_text())
    assert (test["accuracy"], test["loss"]) == (ref["accuracy"], ref["loss"])

    client = _client(repo_dir)
    exp = client.get_experiment_by_name("synthetic_text")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.status for r in runs]  # one run, not two half ones
    run = runs[0]
    assert run.info.status == "FINISHED"
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")}
    assert steps == set(range(1, EPOCHS + 1))
    assert "test_accuracy" in run.data.metrics
    assert not list((repo_dir / ".trackvision" / "resume").glob("*.pt"))


def test_ctrl_c_saves_marks_the_run_killed_and_exits_non_zero(tmp_path: Path) -> None:
    repo_dir, env = copy_repo(tmp_path / "repo", _slow_tiny)
    config, layout = load_config(repo_dir / "params.yaml"), Layout(repo_dir)
    run_data_stages(config, layout)  # the data, in this process: seconds
    log = tmp_path / "train.log"
    # A file, not a pipe: nobody reads a pipe while we wait, and a full one would stall training.
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["trackvision", "train", "--model", "cnn"],
            cwd=repo_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            # As in a terminal: a runner that starts us in the background (a non-interactive
            # shell's `cmd &`) passes SIGINT down as ignored, and Python then never sees Ctrl-C.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    _wait_for(".trackvision/resume/cnn-*.pt", repo_dir, proc)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    output = log.read_text()
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert list((repo_dir / ".trackvision" / "resume").glob("cnn-*.pt"))
    assert not (repo_dir / "models" / "cnn").exists()  # nothing half-written
    client = _client(repo_dir)
    exp = client.get_experiment_by_name("synthetic_text")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "KILLED"


def test_an_unwritable_output_folder_is_a_clear_error_with_nothing_left_behind(
    tmp_path: Path,
) -> None:
    repo_dir, env = copy_repo(tmp_path / "repo", _slow_tiny)
    _run(["dvc", "repro", "augment"], repo_dir, env)
    models = repo_dir / "models"
    models.mkdir(exist_ok=True)
    models.chmod(0o555)
    try:
        if os.access(models, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root): cannot test this")
        proc = subprocess.run(
            ["trackvision", "train", "--model", "cnn"],
            cwd=repo_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        models.chmod(0o755)
    assert proc.returncode != 0
    assert str(models) in proc.stderr and "Traceback" not in proc.stderr
    assert list(models.iterdir()) == []
