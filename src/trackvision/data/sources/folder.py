"""A user's own images: ``data.folder.path`` laid out as ``<class>/<images>`` at any depth."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from trackvision.data.images import IMAGE_SUFFIXES
from trackvision.data.sources import FetchContext, register_source
from trackvision.errors import ConfigError, DataError


@dataclass(frozen=True)
class FolderOptions:
    path: str = ""  # absolute, or relative to the repository root
    channels: int = 3  # 3 = RGB, 1 = greyscale

    def validate(self, key: str) -> None:
        if not self.path:
            raise ConfigError(f"{key}.path: set it to a folder laid out as <class>/<images>")
        if self.channels not in (1, 3):
            raise ConfigError(f"{key}.channels: must be 1 or 3, got {self.channels}")


@register_source("folder", options=FolderOptions, channels=3)
def fetch_folder(out_dir: Path, options: FolderOptions, context: FetchContext) -> dict[str, Any]:
    """Your own images, one sub-folder per class (nested folders inside a class are fine)."""
    base = Path(options.path)
    base = base if base.is_absolute() else context.root / base
    if not base.is_dir():
        raise DataError(f"data.folder.path: {base} is not a folder")
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{base}: need at least 2 class sub-folders, found {classes or 'none'}")
    copied, ignored = dict.fromkeys(classes, 0), []
    for name in classes:
        (out_dir / name).mkdir(parents=True)
        files = sorted(p for p in (base / name).rglob("*") if p.is_file())
        for path in tqdm(files, desc=name, unit="file"):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                ignored.append(str(path.relative_to(base)))
                continue
            # Nested paths flattened into one name, so two "IMG_0001.jpg" never collide.
            flat = "__".join(path.relative_to(base / name).parts)
            shutil.copyfile(path, out_dir / name / flat)
            copied[name] += 1
    return {
        "images": sum(copied.values()),
        "classes": classes,
        "counts": copied,
        "ignored_not_images": len(ignored),
        "ignored": ignored[:100],
        "path": str(base),
    }
