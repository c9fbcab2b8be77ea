"""Team mode: the pipeline tracks into a shared `mlflow server` backed by PostgreSQL.

The test starts a real PostgreSQL (Debian's) in a temporary cluster and a real mlflow server
over it on 127.0.0.1; the project only gets MLFLOW_TRACKING_URI, as a team member would.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import tiny_params
from tests.integration.repos import copy_repo, run
from tests.loopback import free_port, program_on_port

pytestmark = pytest.mark.integration

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
PG_BIN = Path(PG_BIN[-1]) if PG_BIN else None


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; Debian's package creates the `postgres` user for it.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1; yields the URL of its `mlflow` database."""
    root = Path(tempfile.mkdtemp(prefix="trackvision-pg-"))  # outside root's 0700 pytest folder
    data, port = root / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    pg = {"env": {**os.environ, "LC_ALL": "C.UTF-8"}, "capture_output": True, "text": True}
    try:
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
            ),
            check=True,
            **pg,
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        started = subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-l",
                    str(root / "log"),
                    "-w",
                    "start",
                ]
            ),
            **pg,
        )
        assert started.returncode == 0, started.stderr + (root / "log").read_text()
        subprocess.run(
            [
                str(PG_BIN / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "mlflow",
            ],
            check=True,
            **pg,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]), **pg
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def team_server(postgres, tmp_path) -> Iterator[str]:
    """`mlflow server` over the PostgreSQL store, artifacts proxied to a folder; yields its URL."""
    port, log = free_port(), tmp_path / "mlflow-server.log"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        postgres,
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with program_on_port(cmd, port, log):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.skipif(PG_BIN is None, reason="no PostgreSQL server (make test installs it with apt)")
def test_runs_metrics_and_artifacts_land_on_the_team_server(postgres, team_server, tmp_path):
    from mlflow.tracking import MlflowClient

    def one_model(params: dict) -> dict:
        p = tiny_params(params, **{"train.models": ["cnn"]})
        p["mlflow"]["enabled"] = True
        return p

    repo, env = copy_repo(tmp_path / "repo", one_model)
    env["MLFLOW_TRACKING_URI"] = team_server
    run(["dvc", "repro"], repo, env)

    team = MlflowClient(team_server)
    exp = team.get_experiment_by_name("synthetic_text")
    assert exp is not None and exp.artifact_location.startswith("mlflow-artifacts:")
    (cnn,) = team.search_runs([exp.experiment_id])
    assert cnn.info.status == "FINISHED" and cnn.data.params["model.name"] == "cnn"
    assert [m.step for m in team.get_metric_history(cnn.info.run_id, "val_accuracy")] == [1, 2]
    assert "test_accuracy" in cnn.data.metrics
    png = Path(team.download_artifacts(cnn.info.run_id, "evaluation/confusion.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((tmp_path / "artifacts").rglob("confusion.png"))  # stored by the server
    champion = team.get_model_version_by_alias("synthetic_text-classifier", "champion")
    assert champion.run_id == cnn.info.run_id

    # In PostgreSQL, and nothing in the project's local store.
    counted = subprocess.run(
        [str(PG_BIN / "psql"), postgres, "-tAc", "select count(*) from runs"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert counted.stdout.strip() == "1"
    assert not (repo / "mlflow.db").exists()
    assert not (repo / "mlruns").exists()
