"""The benchmarks that work on a repository whose pipeline has run, at their smallest size, in a
tiny copy of this repository (tests/integration/test_benchmarks.py has the others)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tiny_params
from tests.integration.repos import bench, copy_repo, run

pytestmark = pytest.mark.integration


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
    assert bench("predict.py", args, tmp_path / "out.json", repo, env)


def test_the_serving_benchmark_runs(trained, tmp_path: Path) -> None:
    repo, env = trained
    args = ["--repo", str(repo), "--photos", "4", "--side", "200"]
    report = bench("serving.py", args, tmp_path / "out.json", repo, env)
    assert report["http_batch_32_photos_per_s"] > 0


def test_the_trial_cost_benchmark_runs(trained, tmp_path: Path) -> None:
    repo, env = trained
    report = bench("trial_cost.py", ["--repo", str(repo)], tmp_path / "out.json", repo, env)
    assert report["ratio_wall_to_epochs"] > 1


def test_the_search_benchmark_runs(trained, tmp_path: Path) -> None:
    repo, env = trained
    args = ["--repo", str(repo), "--trials", "1", "--jobs", "1"]
    report = bench("tune_search.py", args, tmp_path / "out.json", repo, env)
    assert [s["trials"] for s in report["searches"]] == [1, 1]


def test_the_queue_benchmark_runs(trained, tmp_path: Path) -> None:
    repo, env = trained
    args = ["--repo", str(repo), "--experiments", "1", "--poll", "1"]
    report = bench("experiment_queue.py", args, tmp_path / "out.json", repo, env)
    assert report["experiments"] == 1
