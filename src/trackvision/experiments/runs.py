"""Finished runs read back from the tracking store, for analyses across experiments."""

from __future__ import annotations

from typing import Any


def finished_runs(tracking_uri: str, experiment: str) -> list[dict[str, Any]]:
    """Every FINISHED run of ``experiment``: run_id, start_time, params and metrics as dicts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=5000
    )
    return [
        {
            "run_id": r.info.run_id,
            "start_time": r.info.start_time,
            "params": dict(r.data.params),
            "metrics": dict(r.data.metrics),
        }
        for r in runs
    ]
