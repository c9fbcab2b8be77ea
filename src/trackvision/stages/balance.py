"""balance: decode once, de-duplicate, split, balance, pack."""

from __future__ import annotations

import logging
from typing import Any

from trackvision import atomic
from trackvision.config import Config
from trackvision.data.balance import build_balanced_set
from trackvision.data.packed import write_classes, write_split
from trackvision.layout import Layout

log = logging.getLogger(__name__)


def balance(config: Config, layout: Layout) -> dict[str, Any]:
    """Decode, de-duplicate, split and balance into packed arrays plus a manifest."""
    result = build_balanced_set(
        layout.raw(config.data.source),
        channels=config.data.channels,
        image_size=config.data.image_size,
        ratios=config.balance.split,
        strategy=config.balance.strategy,
        seed=config.balance.seed,
        min_per_class=config.data.min_per_class,
        relative_to=layout.root,
        presplit=config.data.presplit,
        workers=config.data.workers,
    )
    with atomic.atomic_path(layout.balanced) as tmp:
        for name, split in result.splits.items():
            write_split(tmp, name, split)
        write_classes(tmp, result.classes)
        atomic.write_csv(
            tmp / "manifest.csv", result.manifest, ["path", "label", "split", "sha256"]
        )
    atomic.write_json(layout.balance_report, result.report)
    log.info("balance: %s", {k: sum(v.values()) for k, v in result.report["after"].items()})
    if result.report["skipped_unreadable"]:
        log.warning(
            "balance: skipped %d unreadable file(s); see %s",
            result.report["skipped_unreadable"],
            layout.balance_report,
        )
    return result.report
