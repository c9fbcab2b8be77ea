"""What the download stage leaves in ``data/raw/<source>/`` and how balance reads it back.

Three layouts, one reader:

- a **pack**: ``pack.bin`` (the files' bytes, end to end) + ``index.csv`` (name, label, split,
  offset, size, sha256) + ``classes.json``. Large datasets (Fashion-MNIST, Tiny-ImageNet) are
  packed, so DVC hashes, pushes and pulls three files instead of 100,000.
- a **manifest** of files that stay where the user keeps them: ``manifest.csv`` (path, label,
  size, sha256) + ``classes.json``. A photo gallery is read in place, never copied; the manifest is
  the tracked record of what was read.
- **class folders**: ``<class>/<files>`` (or ``{train,test}/<class>/<files>``), for small sources.

Every image becomes a ``RawItem``: where to read its bytes, the name to report it by (the user's
own path for a gallery), its class and, for sources with an official test split, its split.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trackvision.data.images import IMAGE_SUFFIXES
from trackvision.errors import DataError

PACK, INDEX, MANIFEST, CLASSES = "pack.bin", "index.csv", "manifest.csv", "classes.json"
INDEX_FIELDS = ["name", "label", "split", "offset", "size", "sha256"]
MANIFEST_FIELDS = ["path", "label", "size", "sha256"]


@dataclass(frozen=True)
class RawItem:
    """One image to decode: bytes at ``file[offset:offset+size]`` (size -1 = the whole file)."""

    file: str
    shown_as: str  # the path reported to the user (manifests: the user's own file)
    label: str
    split: str = ""  # "train" / "test" for a source's official split, else ""
    offset: int = 0
    size: int = -1
    sha256: str = ""  # expected digest, when recorded ("" = not known in advance)

    def read(self) -> bytes:
        if self.size < 0:
            return Path(self.file).read_bytes()
        with open(self.file, "rb") as fh:
            return os.pread(fh.fileno(), self.size, self.offset)


class PackWriter:
    """Append files' bytes to ``<directory>/pack.bin``; ``close`` writes the index."""

    def __init__(self, directory: Path, classes: Iterable[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.classes = list(classes)
        self._pack = open(self.directory / PACK, "wb")  # noqa: SIM115 - closed in close()
        self._rows: list[dict[str, object]] = []

    def add(self, name: str, label: str, data: bytes, split: str = "") -> None:
        if label not in self.classes:
            raise ValueError(f"{name}: label {label!r} is not one of {self.classes}")
        offset = self._pack.tell()
        self._pack.write(data)
        digest = hashlib.sha256(data).hexdigest()
        self._rows.append(
            {
                "name": name,
                "label": label,
                "split": split,
                "offset": offset,
                "size": len(data),
                "sha256": digest,
            }
        )

    def __len__(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        self._pack.close()
        _write_table(self.directory / INDEX, self._rows, INDEX_FIELDS)
        write_classes(self.directory, self.classes)

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_manifest(directory: Path, classes: list[str], rows: list[dict[str, object]]) -> None:
    """The record of a gallery read in place: one row per file (path, label, size, sha256)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    _write_table(Path(directory) / MANIFEST, rows, MANIFEST_FIELDS)
    write_classes(directory, classes)


def write_classes(directory: Path, classes: list[str]) -> None:
    (Path(directory) / CLASSES).write_text(json.dumps(classes) + "\n", encoding="utf-8")


def _write_table(path: Path, rows: list[dict[str, object]], fields: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _read_table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def read_raw(
    raw_dir: Path, shown_base: Path | None = None, presplit: bool = False
) -> tuple[list[str], list[RawItem]]:
    """Classes (sorted, as labels are numbered) and every image of ``raw_dir``, in a fixed order.

    ``shown_base``: pack and folder items are reported relative to it (the repository root).
    ``presplit``: class folders sit under ``train/`` and ``test/`` (packs record the split).
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: no such folder; run the download stage first")
    shown = _shown(raw_dir, shown_base)
    if (raw_dir / INDEX).is_file():
        classes = _classes(raw_dir)
        items = [
            RawItem(
                str(raw_dir / PACK),
                f"{shown}/{r['name']}",
                r["label"],
                r["split"],
                int(r["offset"]),
                int(r["size"]),
                r["sha256"],
            )
            for r in _read_table(raw_dir / INDEX)
        ]
    elif (raw_dir / MANIFEST).is_file():
        classes = _classes(raw_dir)
        items = [
            RawItem(r["path"], r["path"], r["label"], sha256=r["sha256"])
            for r in _read_table(raw_dir / MANIFEST)
        ]
    else:
        return _read_class_folders(raw_dir, shown_base, presplit)
    unknown = sorted({i.label for i in items} - set(classes))
    if unknown:
        raise DataError(f"{raw_dir}: labels {unknown} are not in {CLASSES} ({classes})")
    return classes, items


def _read_class_folders(
    raw_dir: Path, shown_base: Path | None, presplit: bool
) -> tuple[list[str], list[RawItem]]:
    roots = [(raw_dir / s, s) for s in ("test", "train")] if presplit else [(raw_dir, "")]
    classes: list[str] | None = None
    items: list[RawItem] = []
    for root, split in roots:
        names = class_folders(root)
        if classes is not None and names != classes:
            raise DataError(f"{raw_dir}: test/ has classes {classes}, train/ has {names}")
        classes = names
        for name in names:
            for path in sorted((root / name).rglob("*")):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    items.append(RawItem(str(path), _shown(path, shown_base), name, split))
    return classes or [], items


def class_folders(root: Path) -> list[str]:
    """The class sub-folders of ``root``, sorted; at least two."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root}: need at least 2 class folders, found {classes or 'none'}")
    return classes


def _classes(raw_dir: Path) -> list[str]:
    path = raw_dir / CLASSES
    if not path.is_file():
        raise DataError(f"{path}: missing; run the download stage again (dvc repro download)")
    return list(json.loads(path.read_text(encoding="utf-8")))


def _shown(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return path.resolve().relative_to(Path(base).resolve()).as_posix()
        except ValueError:
            pass
    return path.as_posix()
