"""plan: the one figure the data stages need from the models listed, in a small file.

balance decodes every image once, at the largest side any listed model is fed (a pretrained
model at its own resolution). Reading that from ``models`` would make balance depend on the whole
section, and DVC would decode the data again whenever any model setting changes (each trial of a
search changes one). This stage depends on ``models`` instead and writes only the decode size:
when a change leaves it the same, the file keeps its bytes and balance stays cached.
"""

from __future__ import annotations

import json
import logging

from trackvision import atomic
from trackvision.config import Config
from trackvision.errors import DataError
from trackvision.layout import Layout

log = logging.getLogger(__name__)


def plan(config: Config, layout: Layout) -> dict[str, int]:
    """Write ``data/plan.json``: the side balance decodes images to."""
    result = {"decode_size": config.decode_size}
    atomic.write_json(layout.plan, result)
    log.info("plan: %s", result)
    return result


def read_decode_size(layout: Layout) -> int:
    """The side the plan stage chose; a clear error when it has not run or the file is not its."""
    if not layout.plan.is_file():
        raise DataError(f"{layout.plan}: missing; run the plan stage first (dvc repro)")
    try:
        side = json.loads(layout.plan.read_text(encoding="utf-8"))["decode_size"]
    except (ValueError, KeyError, TypeError):
        side = None
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise DataError(
            f'{layout.plan}: expected {{"decode_size": <pixels>}} as the plan stage writes it; '
            "run `dvc repro plan`"
        )
    return side
