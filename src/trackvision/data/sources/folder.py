"""A user's own images: ``data.folder.path`` laid out as ``<class>/<images>`` at any depth.

The photos are read where they are, never copied into the workspace: the download stage writes
only a manifest (path, size, sha256 of every image it found), which is the tracked record of what
the pipeline read. ``dvc.yaml`` names the folder as a dependency, so ``dvc repro`` reruns when a
photo is added, removed or changed, and does nothing when none is. Files are only ever read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from trackvision.data.images import IMAGE_SUFFIXES
from trackvision.data.rawset import class_folders, write_manifest
from trackvision.data.sources import FetchContext, register_source
from trackvision.errors import ConfigError, DataError

CHUNK = 1 << 20


@dataclass(frozen=True)
class FolderOptions:
    path: str = "data/gallery"  # absolute, or relative to the repository root
    channels: int = 3  # 3 = RGB, 1 = greyscale

    def validate(self, key: str) -> None:
        if not self.path:
            raise ConfigError(f"{key}.path: set it to a folder laid out as <class>/<images>")
        if self.channels not in (1, 3):
            raise ConfigError(f"{key}.channels: must be 1 or 3, got {self.channels}")


def gallery_root(options: FolderOptions, root: Path) -> Path:
    """The configured folder, resolved against the repository root when relative."""
    base = Path(options.path).expanduser()
    return (base if base.is_absolute() else root / base).resolve()


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@register_source("folder", options=FolderOptions, channels=3)
def fetch_folder(out_dir: Path, options: FolderOptions, context: FetchContext) -> dict[str, Any]:
    """Your own images, one sub-folder per class (nested folders inside a class are fine)."""
    base = gallery_root(options, context.root)
    if not base.is_dir():
        raise DataError(f"data.folder.path: {base} is not a folder")
    try:
        classes = class_folders(base)
    except DataError as exc:
        raise DataError(f"data.folder.path: {exc}") from None
    rows, counts, ignored = [], dict.fromkeys(classes, 0), []
    files = [(name, p) for name in classes for p in sorted((base / name).rglob("*")) if p.is_file()]
    for name, path in tqdm(files, desc="folder: list and hash", unit="file", disable=None):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            ignored.append(str(path))
            continue
        rows.append(
            {"path": str(path), "label": name, "size": path.stat().st_size, "sha256": _digest(path)}
        )
        counts[name] += 1
    write_manifest(out_dir, classes, rows)
    return {
        "images": len(rows),
        "classes": classes,
        "counts": counts,
        "ignored_not_images": len(ignored),
        "ignored": ignored[:100],
        "path": str(base),
    }
