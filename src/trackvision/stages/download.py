"""download: fetch (or generate) the configured source."""

from __future__ import annotations

import json
import logging
from pathlib import Path
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
    before = _archive_digests(target / "source.json")
    with atomic.atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        context = FetchContext(
            config.download.downloader(layout.root), layout.root, config.data.workers
        )
        summary = source.fetch(tmp, config.data.options, context)
        summary = {"source": source.name, "options": config.data.options.__dict__, **summary}
        atomic.write_json(tmp / "source.json", summary)
    for name, digest in _archive_digests(target / "source.json").items():
        if before.get(name, digest) != digest:
            log.warning(
                "download: %s changed since the last run (sha256 %s -> %s)",
                name,
                before[name],
                digest,
            )
    log.info("download: %s -> %s (%s images)", source.name, target, summary.get("images"))
    return summary


def _archive_digests(summary_path: Path) -> dict[str, str]:
    """Archive name -> sha256 recorded by a previous download, so a changed file is noticed."""
    if not summary_path.is_file():
        return {}
    archives = json.loads(summary_path.read_text(encoding="utf-8")).get("archives", {})
    return {name: info["sha256"] for name, info in archives.items() if "sha256" in info}
