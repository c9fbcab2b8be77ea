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
    return "n/a" if value is None else format(value, spec)


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


def compare(config: Config, layout: Layout) -> str:
    """A table of every model's test metrics, best first: ``reports/compare.md`` and ``.json``."""
    rows = []
    for name in config.models:
        m = _read(layout.metrics_dir(name) / "evaluation.json", f"the evaluate stage for {name}")
        train_info = _read(layout.model_dir(name) / "train.json", f"the train stage for {name}")
        run = _read(layout.run_record(name), f"the train stage for {name}")
        rows.append(
            {
                "model": name,
                "accuracy": m["accuracy"],
                "accuracy_ci95": m.get("accuracy_ci95"),
                "f1_weighted": m["f1_weighted"],
                "f1_weighted_ci95": m.get("f1_weighted_ci95"),
                "doctor": m.get("doctor_status", "n/a"),
                "loss": m["loss"],
                "n_test": m["n"],
                "n_params": train_info["n_params"],
                "model_size_mb": m.get("model_size_mb"),
                "cpu_latency_ms": m.get("cpu_latency_ms"),
                "best_epoch": train_info["best_epoch"],
                "train_seconds": run.get("train_seconds"),
            }
        )
    rows.sort(key=lambda r: -r["accuracy"])
    lines = [
        f"# Test-set comparison ({config.data.source})",
        "",
        "| model | accuracy | 95% interval | F1 (weighted) | F1 95% interval | loss "
        "| test images | parameters | file MB | CPU ms/image | best epoch | train s | doctor |",
        "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['model']} | {r['accuracy']:.4f} | {_interval(r['accuracy_ci95'])} | "
        f"{r['f1_weighted']:.4f} | {_interval(r['f1_weighted_ci95'])} | {r['loss']:.4f} | "
        f"{r['n_test']} | {r['n_params']:,} | {_num(r['model_size_mb'], '.2f')} | "
        f"{_num(r['cpu_latency_ms'], '.2f')} | {r['best_epoch']} | "
        f"{_num(r['train_seconds'], '.1f')} | {r['doctor']} |"
        for r in rows
    ]
    lines += ["", overlap_sentence(rows)]
    text = "\n".join(lines) + "\n"
    atomic.write_text(layout.reports / "compare.md", text)
    atomic.write_json(layout.reports / "compare.json", rows)
    log.info("compare:\n%s", text)
    return text
