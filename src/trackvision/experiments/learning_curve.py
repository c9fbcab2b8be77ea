"""Learning curves: test accuracy against the share of training data, pretrained vs scratch.

The runs come from a ``dvc exp run --queue`` sweep over ``train.subset`` and
``models.<name>.pretrained`` (see the README); this module reads their results back from MLflow,
keeps the latest finished run per (pretrained, subset) point, and writes
``reports/learning_curve_<model>.{json,md,png}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trackvision import atomic
from trackvision.errors import DataError

log = logging.getLogger(__name__)


def curve_points(
    runs: Iterable[Mapping[str, Any]], model: str, where: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One point per (pretrained, subset): the latest run of ``model`` with a test accuracy.

    Each run is a mapping with ``params``, ``metrics`` and ``start_time`` (as MLflow gives them).
    ``where`` keeps only runs whose params have those values (``{"train.image_size": "64"}``),
    so that one sweep is not mixed with other experiments on the same model.
    """
    where = dict(where or {})
    latest: dict[tuple[str, float], Mapping[str, Any]] = {}
    for run in runs:
        params, metrics = run["params"], run["metrics"]
        if params.get("model.name") != model or "test_accuracy" not in metrics:
            continue
        if any(params.get(k) != v for k, v in where.items()):
            continue
        key = (params.get("model.pretrained", "none"), float(params.get("train.subset", 1.0)))
        if key not in latest or run["start_time"] > latest[key]["start_time"]:
            latest[key] = run
    points = [
        {
            "pretrained": pretrained,
            "subset": subset,
            "n_train": int(run["params"].get("data.n_train", 0)),
            "test_accuracy": run["metrics"]["test_accuracy"],
            "run_id": run["run_id"],
        }
        for (pretrained, subset), run in latest.items()
    ]
    return sorted(points, key=lambda p: (p["pretrained"], p["subset"]))


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
