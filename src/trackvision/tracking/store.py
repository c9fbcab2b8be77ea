"""Where the tracking store is, and what a run says about where it came from.

``MLFLOW_TRACKING_URI`` if set (a team server), else ``mlflow.tracking_uri`` from params.yaml, else
``sqlite:///<repo root>/mlflow.db``. The repo root is ``DVC_ROOT`` when DVC runs the stage, which
matters for ``dvc exp run --queue/--temp``: those run in a temporary copy of the repo that is
deleted afterwards, so the store and the artifacts must be anchored in the real one.
"""

from __future__ import annotations

import os
import subprocess

from trackvision.layout import repo_root


def resolve_tracking_uri(configured: str = "") -> str:
    """MLFLOW_TRACKING_URI, else the configured URI, else the sqlite file at the repo root."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or configured
        or f"sqlite:///{repo_root() / 'mlflow.db'}"
    )


def use_tracking_uri(uri: str) -> None:
    """Point MLflow's fluent API at ``uri`` without leaking it into this process's environment.

    ``mlflow.set_tracking_uri`` also sets MLFLOW_TRACKING_URI, which ``resolve_tracking_uri``
    reads first: one run's store would silently become every later run's in the same process.
    """
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def run_context_tags() -> dict[str, str]:
    """Git commit, DVC experiment name and stage, when there are any."""
    tags: dict[str, str] = {}
    commit = os.environ.get("DVC_EXP_BASELINE_REV") or _git_commit()
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_STAGE"):
        tags["dvc_stage"] = os.environ["DVC_STAGE"]
    return tags


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
