"""Every benchmark script runs to the end at its smallest size, so none can rot unnoticed.

The figures of a smoke run mean nothing; each test checks only that the script finished and
wrote its report. Scripts that run experiments work in a tiny copy of this repository.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, tiny_params
from tests.integration.repos import copy_repo, git_env, run

pytestmark = pytest.mark.integration

BENCH = REPO / "benchmarks"


def _bench(script: str, args: list[str], out: Path, cwd: Path, env: dict[str, str]) -> dict:
    run([sys.executable, str(BENCH / script), *args, "--out", str(out)], cwd, env, timeout=1200)
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The venv's programs first on PATH, a home of its own (MLflow's and DVC's caches)."""
    home = tmp_path_factory.mktemp("bench-home")
    return {**git_env(), "HOME": str(home), "MPLCONFIGDIR": str(Path.home() / ".config/matplotlib")}


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("data_stages.py", ["--images", "16", "--size", "64"]),
        ("text_recognition_build.py", ["--flickr", "200"]),
        ("near_duplicates.py", ["--originals", "20"]),
        ("training.py", ["--quick", "--cases", "cnn:28", "--no-mlflow"]),
        ("scale.py", ["--scale", "0.01", "--no-mlflow"]),
    ],
)
def test_a_standalone_benchmark_runs(script, args, tmp_path: Path, env) -> None:
    report = _bench(script, args, tmp_path / "out.json", tmp_path, env)
    assert report


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A tiny copy of this repository after `dvc repro` (the cnn), committed and pushed."""

    def tiny(params: dict) -> dict:
        p = tiny_params(params, **{"train.models": ["cnn"], "mlflow.enabled": True})
        p["data"]["synthetic_text"]["count"] = 120
        return p

    repo, env = copy_repo(tmp_path_factory.mktemp("bench") / "repo", tiny)
    run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "dvc repro"], repo, env)
    run(["dvc", "push"], repo, env)
    return repo, env


def test_the_predict_benchmark_runs(trained, tmp_path: Path) -> None:
    repo, env = trained
    args = ["--images", "8", "--size", "64", "--model", str(repo / "models" / "cnn")]
    assert _bench("predict.py", args, tmp_path / "out.json", repo, env)


def test_the_serving_benchmark_runs(trained, tmp_path: Path) -> None:
    repo, env = trained
    args = ["--repo", str(repo), "--photos", "4", "--side", "200"]
    report = _bench("serving.py", args, tmp_path / "out.json", repo, env)
    assert report["http_batch_32_photos_per_s"] > 0


def test_the_trial_cost_benchmark_runs(trained, tmp_path: Path) -> None:
    repo, env = trained
    report = _bench("trial_cost.py", ["--repo", str(repo)], tmp_path / "out.json", repo, env)
    assert report["ratio_wall_to_epochs"] > 1


def test_the_search_benchmark_runs(trained, tmp_path: Path) -> None:
    repo, env = trained
    args = ["--repo", str(repo), "--trials", "1", "--jobs", "1"]
    report = _bench("tune_search.py", args, tmp_path / "out.json", repo, env)
    assert [s["trials"] for s in report["searches"]] == [1, 1]


def test_the_queue_benchmark_runs(trained, tmp_path: Path) -> None:
    repo, env = trained
    args = ["--repo", str(repo), "--experiments", "1", "--poll", "1"]
    report = _bench("experiment_queue.py", args, tmp_path / "out.json", repo, env)
    assert report["experiments"] == 1
