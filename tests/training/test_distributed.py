"""Data-parallel training under torchrun: two CPU processes, one MLflow run, equal weights.

One node (``--standalone``), and two nodes that meet through c10d rendezvous: two separate
launches in two copies of the project, as two machines would run them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_project
from tests.loopback import free_port
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


@pytest.mark.integration
def test_two_nodes_meet_by_rendezvous_and_train_one_model(tmp_path: Path, params) -> None:
    from mlflow.tracking import MlflowClient

    node0 = tmp_path / "node0"
    node0.mkdir()
    config, _ = tiny_project(node0, params)
    # The second machine: its own checkout with the same data; the MLflow store is shared
    # (a team server in real life; here the first node's sqlite file, by absolute path).
    node1 = tmp_path / "node1"
    shutil.copytree(node0, node1, ignore=shutil.ignore_patterns("mlflow.db*", "mlruns"))

    torchrun = Path(sys.executable).parent / "torchrun"
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core per node on a 2-core machine
    launches = [
        subprocess.Popen(
            [
                str(torchrun),
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(rank),
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                "--rdzv-id",
                "trackvision-test",
                # Both "machines" are this one: say which hosts the rendezvous store.
                "--rdzv-conf",
                f"is_host={int(rank == 0)}",
                "--local-addr",
                "127.0.0.1",
                "-m",
                "trackvision",
                "train",
                "--model",
                "cnn",
            ],
            cwd=node,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank, node in enumerate((node0, node1))
    ]
    outs = [p.communicate(timeout=600)[0] for p in launches]
    for p, out in zip(launches, outs, strict=True):
        assert p.returncode == 0, out[-4000:]
    both = "\n".join(outs)
    digests = dict(re.findall(r"rank (\d)/2: final weights sha256 ([0-9a-f]{64})", both))
    assert set(digests) == {"0", "1"}, both[-4000:]
    assert digests["0"] == digests["1"]  # one model, data-parallel over the nodes

    # Global rank 0 alone wrote the outputs and tracked the run.
    assert (node0 / "models" / "cnn" / "model.safetensors").is_file()
    assert not (node1 / "models" / "cnn").exists()
    client = MlflowClient(config.mlflow.tracking_uri)
    (only,) = client.search_runs([client.get_experiment_by_name("synthetic_text").experiment_id])
    assert only.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(only.info.run_id, "val_accuracy")] == [1, 2]


def test_gradual_finetuning_is_refused_under_torchrun() -> None:
    with pytest.raises(TrainingError, match="gradual is not supported under torchrun"):
        check_supported(World(rank=0, size=2), "gradual")
    check_supported(World(), "gradual")  # one process: fine
