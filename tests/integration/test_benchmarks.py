"""Every benchmark script runs to the end at its smallest size, so none can rot unnoticed.

The figures of a smoke run mean nothing; each test checks only that the script finished and
wrote its report. The scripts that run experiments: test_benchmarks_on_a_repo.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.repos import bench, git_env

pytestmark = pytest.mark.integration


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
    report = bench(script, args, tmp_path / "out.json", tmp_path, env)
    assert report
