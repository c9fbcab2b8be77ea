"""compare: every model's test metrics in one table."""

from __future__ import annotations

import json
import logging

from trackvision import atomic
from trackvision.config import Config
from trackvision.errors import DataError
from trackvision.layout import Layout

log = logging.getLogger(__name__)


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _interval(ci: list[float] | None) -> str:
    return "n/a" if ci is None else f"{ci[0]:.3f}-{ci[1]:.3f}"


def compare(config: Config, layout: Layout) -> str:
    """A table of every model's test metrics, best first: ``reports/compare.md`` and ``.json``."""
    rows = []
    for name in config.models:
        path = layout.metrics_dir(name) / "test.json"
        if not path.is_file():
            raise DataError(f"{path}: missing; run the evaluate stage for {name}")
        m = json.loads(path.read_text(encoding="utf-8"))
        train_info = json.loads((layout.model_dir(name) / "train.json").read_text(encoding="utf-8"))
        rows.append(
            {
                "model": name,
                "accuracy": m["accuracy"],
                "accuracy_ci95": m.get("accuracy_ci95"),
                "f1_weighted": m["f1_weighted"],
                "loss": m["loss"],
                "n_test": m["n"],
                "n_params": train_info["n_params"],
                "model_size_mb": m.get("model_size_mb"),
                "cpu_latency_ms": m.get("cpu_latency_ms"),
                "best_epoch": train_info["best_epoch"],
                "train_seconds": train_info["train_seconds"],
            }
        )
    rows.sort(key=lambda r: -r["accuracy"])
    lines = [
        f"# Test-set comparison ({config.data.source})",
        "",
        "| model | accuracy | 95% interval | F1 (weighted) | loss | test images | parameters "
        "| file MB | CPU ms/image | best epoch | train s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['accuracy']:.4f} | {_interval(r['accuracy_ci95'])} | "
        f"{r['f1_weighted']:.4f} | {r['loss']:.4f} | "
        f"{r['n_test']} | {r['n_params']:,} | {_num(r['model_size_mb'], '.2f')} | "
        f"{_num(r['cpu_latency_ms'], '.2f')} | {r['best_epoch']} | {r['train_seconds']:.1f} |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    atomic.write_text(layout.reports / "compare.md", text)
    atomic.write_json(layout.reports / "compare.json", rows)
    log.info("compare:\n%s", text)
    return text
