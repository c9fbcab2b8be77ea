"""Balancing and splitting: no image in two splits, stratified, balanced, bad files reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trackvision.data.balance import build_balanced_set
from trackvision.data.splits import stratified_split
from trackvision.errors import DataError

RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}


def _write_class(folder: Path, n: int, offset: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(offset + i)
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
            folder / f"{i:03d}.png"
        )


def _build(raw: Path, strategy: str = "undersample", min_per_class: int = 1):
    return build_balanced_set(
        raw,
        channels=3,
        image_size=8,
        ratios=RATIOS,
        strategy=strategy,
        seed=0,
        min_per_class=min_per_class,
        relative_to=raw,
    )


def test_duplicates_never_cross_splits(tmp_path: Path) -> None:
    _write_class(tmp_path / "a", 20)
    _write_class(tmp_path / "b", 20, offset=100)
    for i in range(5):  # byte-identical copies under another name
        (tmp_path / "a" / f"copy_{i}.png").write_bytes(
            (tmp_path / "a" / f"{i:03d}.png").read_bytes()
        )
    result = _build(tmp_path)
    assert result.report["duplicates_removed"] == 5
    split_of: dict[str, set[str]] = {}
    for row in result.manifest:
        split_of.setdefault(row["sha256"], set()).add(row["split"])
    assert all(len(s) == 1 for s in split_of.values())


def test_undersample_balances_every_split(tmp_path: Path) -> None:
    _write_class(tmp_path / "few", 20)
    _write_class(tmp_path / "many", 60, offset=100)
    result = _build(tmp_path, "undersample")
    for name, split in result.splits.items():
        counts = np.bincount(split.labels, minlength=2)
        assert counts[0] == counts[1], (name, counts)
    assert result.report["before"] == {"few": 20, "many": 60}


def test_oversample_repeats_only_in_train(tmp_path: Path) -> None:
    _write_class(tmp_path / "few", 20)
    _write_class(tmp_path / "many", 60, offset=100)
    result = _build(tmp_path, "oversample")
    train = np.bincount(result.splits["train"].labels)
    assert train[0] == train[1] == 36
    test = np.bincount(result.splits["test"].labels)
    assert test.tolist() == [4, 12]  # evaluation keeps the natural mix, no repeats


def test_split_is_stratified_and_seeded() -> None:
    labels = np.array([0] * 50 + [1] * 150)
    a = stratified_split(labels, RATIOS, seed=1)
    b = stratified_split(labels, RATIOS, seed=1)
    assert (a == b).all()
    for name, share in RATIOS.items():
        assert ((a == name) & (labels == 0)).sum() == round(50 * share)
        assert ((a == name) & (labels == 1)).sum() == round(150 * share)


def test_corrupt_images_are_skipped_and_reported(tmp_path: Path) -> None:
    _write_class(tmp_path / "a", 10)
    _write_class(tmp_path / "b", 10, offset=50)
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = _build(tmp_path)
    assert result.report["skipped_unreadable"] == 1
    assert result.report["skipped"][0]["path"] == "a/broken.jpg"
    assert sum(len(s) for s in result.splits.values()) == 20


def test_class_below_minimum_fails_naming_it(tmp_path: Path) -> None:
    _write_class(tmp_path / "a", 10)
    _write_class(tmp_path / "b", 3, offset=50)
    with pytest.raises(DataError, match=r"min_per_class=5.*'b': 3"):
        _build(tmp_path, min_per_class=5)


def test_empty_class_fails(tmp_path: Path) -> None:
    _write_class(tmp_path / "a", 10)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match="'b': 0"):
        _build(tmp_path)
