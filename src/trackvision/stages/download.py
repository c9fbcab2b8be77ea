"""download: fetch (or generate) the configured source."""

from __future__ import annotations

import json
import logging
from typing import Any

from trackvision import atomic
from trackvision.config import Config
from trackvision.data.sources import FetchContext, get_source
from trackvision.layout import Layout

log = logging.getLogger(__name__)


def download(config: Config, layout: Layout) -> dict[str, Any]:
    """Fetch (or generate) the configured source into ``data/raw/<source>/<class>/``."""
    source = get_source(config.data.source)
    target = layout.raw(source.name)
    with atomic.atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        context = FetchContext(config.download.downloader(layout.root), layout.root)
        summary = source.fetch(tmp, config.data.options, context)
        summary = {"source": source.name, "options": config.data.options.__dict__, **summary}
        (tmp / "source.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log.info("download: %s -> %s (%s images)", source.name, target, summary.get("images"))
    return summary
