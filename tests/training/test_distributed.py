"""Data-parallel training under torchrun: two CPU processes, one MLflow run, equal weights."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_project
from trackvision.errors import TrainingError
from trackvision.training.distributed import World, check_supported


@pytest.mark.integration  # two torchrun processes: not in make test-fast
def test_two_processes_train_one_run_with_identical_weights(tmp_path: Path, params) -> None:
    from mlflow.tracking import MlflowClient

    config, layout = tiny_project(tmp_path, params)

    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "trackvision",
            "train",
            "--model",
            "cnn",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "joined the gloo process group" in out
    digests = dict(re.findall(r"rank (\d)/2: final weights sha256 ([0-9a-f]{64})", out))
    assert set(digests) == {"0", "1"}, out[-4000:]
    assert digests["0"] == digests["1"]

    client = MlflowClient(config.mlflow.tracking_uri)
    exp = client.get_experiment_by_name("synthetic_text")
    (only,) = client.search_runs([exp.experiment_id])
    assert only.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(only.info.run_id, "val_accuracy")] == [1, 2]
    # Rank 0 wrote the outputs; the epoch metrics count every rank's images.
    assert (layout.model_dir("cnn") / "model.safetensors").is_file()
    history = client.get_metric_history(only.info.run_id, "train_accuracy")
    assert all(0.0 <= m.value <= 1.0 for m in history)


def test_gradual_finetuning_is_refused_under_torchrun() -> None:
    with pytest.raises(TrainingError, match="gradual is not supported under torchrun"):
        check_supported(World(rank=0, size=2), "gradual")
    check_supported(World(), "gradual")  # one process: fine
