"""Tiny-ImageNet-200: 64x64 photos of 200 classes, readable names from ``words.txt``.

Its ``val/`` images (labels in ``val_annotations.txt``) serve as the test split, since the official
test images carry no labels; balance carves validation from ``train/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from trackvision.data.fetch import RemoteFile
from trackvision.data.rawset import PackWriter
from trackvision.data.sources import FetchContext, register_source
from trackvision.errors import ConfigError, DataError

ARCHIVE = RemoteFile(
    "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
    "tiny-imagenet-200.zip",
    md5="90528d7ca1a48142e341f4ef8d21d0de",
)


@dataclass(frozen=True)
class TinyImagenetOptions:
    classes: list[str] = field(default_factory=list)  # wnids or names; empty = all 200
    per_class: int = 0  # cap on training images per class (0 = all 500)

    def validate(self, key: str) -> None:
        if not isinstance(self.classes, list) or not all(isinstance(c, str) for c in self.classes):
            raise ConfigError(
                f"{key}.classes: expected a list of wnids or names, got {self.classes!r}"
            )
        if self.per_class < 0:
            raise ConfigError(f"{key}.per_class: must be >= 0, got {self.per_class}")


def class_names(root: Path, wnids: list[str]) -> dict[str, str]:
    """wnid -> a folder-safe readable name (first synonym in words.txt), unique."""
    words = {}
    for line in (root / "words.txt").read_text(encoding="utf-8").splitlines():
        wnid, _, text = line.partition("\t")
        words[wnid] = text
    names: dict[str, str] = {}
    for wnid in wnids:
        name = re.sub(r"[^A-Za-z0-9]+", "_", words.get(wnid, wnid).split(",")[0]).strip("_")
        names[wnid] = name if name and name not in names.values() else f"{name}_{wnid}"
    return names


@register_source("tiny_imagenet", options=TinyImagenetOptions, channels=3, presplit=True)
def fetch_tiny_imagenet(
    out_dir: Path, options: TinyImagenetOptions, context: FetchContext
) -> dict[str, Any]:
    """Tiny-ImageNet-200 with readable class names; its labelled val/ is the test split."""
    extracted, sha = context.downloader.fetch_extracted(ARCHIVE)
    roots = [p.parent for p in extracted.rglob("wnids.txt")]
    if not roots:
        raise DataError(f"{extracted}: no wnids.txt; not a Tiny-ImageNet archive")
    root = roots[0]
    wnids = (root / "wnids.txt").read_text(encoding="utf-8").split()
    names = class_names(root, wnids)
    if options.classes:
        wanted = set(options.classes)
        unknown = wanted - set(wnids) - set(names.values())
        if unknown:
            raise ConfigError(f"data.tiny_imagenet.classes: unknown {sorted(unknown)}")
        wnids = [w for w in wnids if w in wanted or names[w] in wanted]
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    classes = [names[w] for w in wnids]
    with PackWriter(out_dir, sorted(classes)) as pack:
        for wnid in tqdm(wnids, desc="tiny_imagenet train", unit="class", disable=None):
            files = sorted((root / "train" / wnid / "images").glob("*.JPEG"))
            files = files[: options.per_class] if options.per_class else files
            for path in files:
                pack.add(
                    f"train/{names[wnid]}/{path.name}", names[wnid], path.read_bytes(), "train"
                )
            counts["train"][names[wnid]] = len(files)
        counts["test"] = dict.fromkeys(classes, 0)
        annotations = (root / "val" / "val_annotations.txt").read_text(encoding="utf-8")
        for line in tqdm(
            annotations.splitlines(), desc="tiny_imagenet val", unit="img", disable=None
        ):
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] in names and parts[1] in wnids:
                name = names[parts[1]]
                data = (root / "val" / "images" / parts[0]).read_bytes()
                pack.add(f"test/{name}/{parts[0]}", name, data, "test")
                counts["test"][name] += 1
    return {
        "images": sum(sum(c.values()) for c in counts.values()),
        "classes": classes,
        "counts": counts,
        "archives": {ARCHIVE.name: {"sha256": sha, "md5": ARCHIVE.md5}},
    }
