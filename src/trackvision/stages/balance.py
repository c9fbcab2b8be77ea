"""balance: decode once, de-duplicate, split, balance, pack."""

from __future__ import annotations

import logging
from typing import Any

from trackvision import atomic, doctor
from trackvision.config import Config
from trackvision.data.balance import BalancedSet, build_balanced_set
from trackvision.data.packed import write_classes, write_split
from trackvision.data.similarity import Rule
from trackvision.layout import Layout
from trackvision.stages.plan import read_decode_size

log = logging.getLogger(__name__)


def balance(config: Config, layout: Layout) -> dict[str, Any]:
    """Decode, de-duplicate, split and balance into packed arrays plus a manifest."""
    result = build_balanced_set(
        layout.raw(config.data.source),
        channels=config.data.channels,
        image_size=read_decode_size(layout),
        ratios=config.balance.split,
        strategy=config.balance.strategy,
        seed=config.balance.seed,
        min_per_class=config.data.min_per_class,
        relative_to=layout.root,
        presplit=config.data.presplit,
        workers=config.data.workers,
        near_copies=near_copy_rule(config) if config.balance.group_near_copies else None,
    )
    with atomic.atomic_path(layout.balanced) as tmp:
        for name, split in result.splits.items():
            write_split(tmp, name, split)
        write_classes(tmp, result.classes)
        atomic.write_csv(
            tmp / "manifest.csv", result.manifest, ["path", "label", "split", "sha256"]
        )
    findings = split_findings(result, config)
    result.report["doctor"] = doctor.to_json(findings)
    atomic.write_json(layout.balance_report, result.report)
    log.info("balance: %s", {k: sum(v.values()) for k, v in result.report["after"].items()})
    if result.report["skipped_unreadable"]:
        log.warning(
            "balance: skipped %d unreadable file(s); see %s",
            result.report["skipped_unreadable"],
            layout.balance_report,
        )
    doctor.report("balance", findings)
    doctor.enforce(findings, config.doctor.strict, "balance", layout.balance_report)
    return result.report


def near_copy_rule(config: Config) -> Rule:
    """The copy rule balance groups by and the doctor checks with: one rule for both."""
    return Rule(correlation=config.doctor.near_duplicate_correlation)


def split_findings(result: BalancedSet, config: Config) -> list[doctor.Finding]:
    """Leakage between the splits (exact and near copies) and training-class imbalance."""
    by_split = {name: [r for r in result.manifest if r["split"] == name] for name in result.splits}
    hashes = {name: [r["sha256"] for r in rows] for name, rows in by_split.items()}
    paths = {name: [r["path"] for r in rows] for name, rows in by_split.items()}
    labels = {name: [r["label"] for r in rows] for name, rows in by_split.items()}
    images = {name: split.images for name, split in result.splits.items()}
    return [
        *doctor.check_exact_leakage(hashes, paths),
        *doctor.check_near_duplicates(images, paths, near_copy_rule(config), labels, result.groups),
        *doctor.check_split_groups(result.report.get("near_copy_groups", {})),
        *doctor.check_label_conflicts(result.report["conflicts"]),
        *doctor.check_imbalance(result.report["after"]["train"], config.balance.strategy),
    ]
