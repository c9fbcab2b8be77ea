"""One tiny `dvc repro` of this repository, shared by the integration tests; the queue adds runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tiny_params
from tests.integration.repos import copy_repo, run

MODELS = ["cnn", "vit", "mobilevit_xxs"]


def tiny_pipeline(params: dict) -> dict:
    """Three models, 120 images, two epochs, MLflow on: the whole pipeline in about a minute."""
    p = tiny_params(params, **{"train.models": MODELS})
    p["data"]["synthetic_text"]["count"] = 120
    p["mlflow"]["enabled"] = True
    return p


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A git+DVC copy of this repository with tiny params, after one `dvc repro`, committed."""
    dest, env = copy_repo(tmp_path_factory.mktemp("pipeline") / "repo", tiny_pipeline)
    repro = run(["dvc", "repro"], dest, env)
    (dest.parent / "repro.log").write_text(repro.stdout + repro.stderr)  # stdout/stderr: pipes
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-q", "-m", "dvc repro"], dest, env)
    return dest, env
