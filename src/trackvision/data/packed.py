"""The packed split format: one memory-mappable uint8 array of images and one of labels per split.

``<dir>/<split>_images.npy`` holds N x H x W x C uint8, ``<dir>/<split>_labels.npy`` N int64 and
``<dir>/classes.json`` the class names in label order. Training reads these, never JPEGs, and DVC
tracks a handful of files instead of one per image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trackvision.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Images (N, H, W, C) uint8 and labels (N,) int64 of one split."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def write_split(directory: Path, name: str, split: Split) -> None:
    """Write one split's arrays into ``directory`` (the caller makes the folder atomic)."""
    if split.images.dtype != np.uint8 or split.images.ndim != 4:
        raise ValueError(
            f"images must be uint8 N x H x W x C, got {split.images.dtype} {split.images.shape}"
        )
    if len(split.images) != len(split.labels):
        raise ValueError(f"{len(split.images)} images but {len(split.labels)} labels")
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / f"{name}_images.npy", np.ascontiguousarray(split.images))
    np.save(directory / f"{name}_labels.npy", split.labels.astype(np.int64))


def read_split(directory: Path, name: str, mmap: bool = True) -> Split:
    """Read one split; memory-mapped by default so large sets are not loaded twice."""
    images_path = directory / f"{name}_images.npy"
    labels_path = directory / f"{name}_labels.npy"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise DataError(f"{path}: missing; run the stage that writes it (dvc repro)")
    images = np.load(images_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    labels = np.load(labels_path, allow_pickle=False)
    if len(images) != len(labels):
        raise DataError(f"{directory}: {name} has {len(images)} images but {len(labels)} labels")
    return Split(images, labels)


def write_classes(directory: Path, classes: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "classes.json").write_text(json.dumps(classes) + "\n", encoding="utf-8")


def read_classes(directory: Path) -> list[str]:
    path = directory / "classes.json"
    if not path.is_file():
        raise DataError(f"{path}: missing; run the balance stage first (dvc repro balance)")
    return list(json.loads(path.read_text(encoding="utf-8")))
