"""Learning curves: test accuracy against the share of training data, pretrained vs scratch.

The runs come from a ``dvc exp run --queue`` sweep over ``train.subset`` and
``models.<name>.pretrained`` (see the README); this module reads their results back from MLflow,
keeps the latest finished run per (pretrained, subset) point, and writes
``reports/learning_curve_<model>.{json,md,png}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackvision import atomic
from trackvision.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def finished_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Every FINISHED run of ``experiment`` as MLflow's table: ``run_id``, ``start_time``,
    ``params.<key>``, ``metrics.<key>`` columns (empty when the experiment does not exist)."""
    import mlflow
    import pandas as pd

    from trackvision.tracking import use_tracking_uri

    use_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        return pd.DataFrame(columns=["run_id", "start_time"])
    return mlflow.search_runs(
        experiment_names=[experiment],
        filter_string="attributes.status = 'FINISHED'",
        max_results=50_000,
        output_format="pandas",
    )


def curve_points(
    runs: pd.DataFrame, model: str, where: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One point per (pretrained, subset): the latest run of ``model`` with a test accuracy.

    ``runs`` is MLflow's run table (``finished_runs``). ``where`` keeps only runs whose params
    have those values (``{"train.image_size": "64"}``), so that one sweep is not mixed with other
    experiments on the same model.
    """
    import pandas as pd

    def column(name: str, default: Any = None) -> pd.Series:
        return runs[name] if name in runs else pd.Series(default, index=runs.index)

    keep = (column("params.model.name") == model) & column("metrics.test_accuracy").notna()
    for key, value in (where or {}).items():
        keep &= column(f"params.{key}") == value
    chosen = runs[keep]
    points = pd.DataFrame(
        {
            "pretrained": column("params.model.pretrained", "none")[keep].fillna("none"),
            "subset": column("params.train.subset", 1.0)[keep].fillna(1.0).astype(float),
            "n_train": column("params.data.n_train", 0)[keep].fillna(0).astype(int),
            "test_accuracy": chosen.get("metrics.test_accuracy"),
            "run_id": chosen.get("run_id"),
            "start_time": chosen.get("start_time"),
        }
    )
    latest = points.sort_values("start_time").drop_duplicates(["pretrained", "subset"], keep="last")
    latest = latest.sort_values(["pretrained", "subset"]).drop(columns="start_time")
    return [
        {**row, "n_train": int(row["n_train"]), "test_accuracy": float(row["test_accuracy"])}
        for row in latest.to_dict("records")
    ]


def write_learning_curve(points: list[dict[str, Any]], model: str, out_dir: Path) -> Path:
    """``learning_curve_<model>.json``, ``.md`` (a table) and ``.png`` (the plot) in ``out_dir``."""
    if not points:
        raise DataError(
            f"no evaluated runs of {model} in the tracking store; run the sweep in the README "
            "(dvc exp run --queue -S train.subset=... ) first"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = out_dir / f"learning_curve_{model}"
    atomic.write_json(stem.with_suffix(".json"), points)
    lines = [
        f"# Learning curve: {model}",
        "",
        "| pretrained | share of training data | training images | test accuracy |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {p['pretrained']} | {p['subset']:.0%} | {p['n_train']} | {p['test_accuracy']:.4f} |"
        for p in points
    ]
    atomic.write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for pretrained in sorted({p["pretrained"] for p in points}):
        series = [p for p in points if p["pretrained"] == pretrained]
        ax.plot(
            [p["n_train"] for p in series],
            [p["test_accuracy"] for p in series],
            marker="o",
            label=f"pretrained: {pretrained}",
        )
    ax.set(xlabel="training images (with augmented copies)", ylabel="test accuracy", title=model)
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic.atomic_path(stem.with_suffix(".png")) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    log.info("learning curve of %s:\n%s", model, "\n".join(lines))
    return stem.with_suffix(".png")
