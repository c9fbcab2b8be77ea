"""compare: every model's test metrics in one table."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from trackvision import atomic
from trackvision.config import Config
from trackvision.errors import DataError
from trackvision.layout import Layout

log = logging.getLogger(__name__)


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None or value != value else format(value, spec)  # None or NaN


def _interval(ci: list[float] | None) -> str:
    return "n/a" if ci is None else f"{ci[0]:.3f}-{ci[1]:.3f}"


def intervals_overlap(a: list[float], b: list[float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def overlap_sentence(rows: list[dict]) -> str:
    """Say which models the test set can tell apart: intervals of accuracy that overlap cannot."""
    with_ci = [r for r in rows if r.get("accuracy_ci95")]
    if len(with_ci) < 2:
        return ""
    pairs = [
        (a["model"], b["model"], intervals_overlap(a["accuracy_ci95"], b["accuracy_ci95"]))
        for i, a in enumerate(with_ci)
        for b in with_ci[i + 1 :]
    ]
    overlapping = [f"{a} / {b}" for a, b, o in pairs if o]
    separated = [f"{a} > {b}" for a, b, o in pairs if not o]
    n = ", ".join(sorted({str(r["n_test"]) for r in with_ci}))
    if not separated:
        return (
            f"The 95% accuracy intervals of all models overlap ({n} test images): this test set "
            "cannot rank them; the order above may be chance."
        )
    text = f"Separated by the test set ({n} images): {', '.join(separated)}."
    if overlapping:
        text += f" Intervals overlap, so not ranked: {', '.join(overlapping)}."
    return text


def _read(path: Path, stage: str) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: missing; run {stage}")
    return json.loads(path.read_text(encoding="utf-8"))


# The model's name and the doctor's verdict to the left, every figure to the right.
ALIGN = ("left", *["right"] * 9, "left")


def _row(layout: Layout, name: str) -> dict:
    """One model's figures, all from its evaluation.json: what the params, the data and the code
    determine (timings vary run to run: runs/<model>/ and MLflow hold them)."""
    m = _read(layout.metrics_dir(name) / "evaluation.json", f"the evaluate stage for {name}")
    return {
        "model": name,
        "accuracy": m["accuracy"],
        "accuracy_ci95": m.get("accuracy_ci95"),
        "f1_weighted": m["f1_weighted"],
        "f1_weighted_ci95": m.get("f1_weighted_ci95"),
        "doctor": m.get("doctor_status", "n/a"),
        "loss": m["loss"],
        "n_test": m["n"],
        "n_params": m["n_params"],
        "model_size_mb": m.get("model_size_mb"),
        "best_epoch": m["best_epoch"],
    }


def compare(config: Config, layout: Layout) -> str:
    """A table of every model's test metrics, best first: ``reports/compare.md`` and ``.json``."""
    import pandas as pd

    raw = [_row(layout, name) for name in config.model_names]
    table = pd.DataFrame(raw)
    table = table.sort_values("accuracy", ascending=False, kind="stable")
    shown = pd.DataFrame(
        {
            "model": table["model"],
            "accuracy": table["accuracy"].map("{:.4f}".format),
            "95% interval": table["accuracy_ci95"].map(_interval),
            "F1 (weighted)": table["f1_weighted"].map("{:.4f}".format),
            "F1 95% interval": table["f1_weighted_ci95"].map(_interval),
            "loss": table["loss"].map("{:.4f}".format),
            "test images": table["n_test"],
            "parameters": table["n_params"].map("{:,}".format),
            "file MB": table["model_size_mb"].map(lambda v: _num(v, ".2f")),
            "best epoch": table["best_epoch"],
            "doctor": table["doctor"],
        }
    )
    rows = [raw[i] for i in table.index]  # as read: None stays None (not NaN) in the JSON
    text = (
        f"# Test-set comparison ({config.data.source})\n\n"
        f"{shown.to_markdown(index=False, disable_numparse=True, colalign=ALIGN)}\n\n"
        f"{overlap_sentence(rows)}\n"
    )
    atomic.write_text(layout.reports / "compare.md", text)
    atomic.write_json(layout.reports / "compare.json", rows)
    log.info("compare:\n%s", text)
    return text
