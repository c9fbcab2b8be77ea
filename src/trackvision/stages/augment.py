"""augment: seeded augmented copies of the training split."""

from __future__ import annotations

import logging
from typing import Any

from trackvision import atomic
from trackvision.config import Config
from trackvision.data.augment import augment_split
from trackvision.data.packed import read_split, write_split
from trackvision.layout import Layout

log = logging.getLogger(__name__)


def augment(config: Config, layout: Layout) -> dict[str, Any]:
    """Add seeded augmented copies of the training split (validation and test stay untouched)."""
    train = read_split(layout.balanced, "train")
    augmented = augment_split(train, config.augment)
    with atomic.atomic_path(layout.augmented) as tmp:
        write_split(tmp, "train", augmented)
    summary = {"original": len(train), "augmented": len(augmented)}
    log.info("augment: %s", summary)
    return summary
