"""Leak-free by construction: balance puts every near-copy group in one split, or says why not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.galleries import bursts
from trackvision import doctor
from trackvision.data.balance import build_balanced_set
from trackvision.data.similarity import Rule
from trackvision.data.splits import grouped_stratified_split, split_sizes

RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}
CLASSES = ("beach", "city")


def _balance(raw: Path, group: bool = True, size: int = 64):
    return build_balanced_set(
        raw,
        channels=3,
        image_size=size,
        ratios=RATIOS,
        strategy="none",
        seed=7,
        min_per_class=5,
        relative_to=raw,
        near_copies=Rule() if group else None,
    )


def _gallery(raw: Path, centred_crops: bool) -> tuple[Path, dict[str, int]]:
    """40 photos with 5 edited copies each (a burst) and 160 distinct photos, in two classes."""
    pictures = bursts(40, 5, 160, kinds=("textured_photo",), centred_crops=centred_crops)
    origin = {}
    for k, (picture, group) in enumerate(zip(pictures.pictures, pictures.group, strict=True)):
        folder = raw / CLASSES[group % 2]
        folder.mkdir(exist_ok=True)
        name = f"{k:04d}.jpg"
        picture.convert("RGB").save(folder / name, quality=92)
        origin[f"{folder.name}/{name}"] = group
    return raw, origin


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """Crops of 2-8% a side, off-centre, among the other edits."""
    return _gallery(tmp_path_factory.mktemp("bursts"), centred_crops=False)


def _pairs_across(manifest: list[dict[str, str]], origin: dict[str, int]) -> int:
    split_of: dict[int, set[str]] = {}
    for row in manifest:
        split_of.setdefault(origin[row["path"]], set()).add(row["split"])
    return sum(len(s) > 1 for s in split_of.values())


@pytest.mark.parametrize("centred_crops", [True, False])
def test_by_the_known_truth_no_burst_crosses_splits(tmp_path: Path, centred_crops: bool) -> None:
    raw, origin = _gallery(tmp_path, centred_crops)
    assert _pairs_across(_balance(raw).manifest, origin) == 0


def test_by_the_doctors_check_no_copy_crosses_splits_in_a_gallery_of_bursts(gallery) -> None:
    raw, _ = gallery
    result = _balance(raw)
    grouping = result.report["near_copy_groups"]
    assert grouping["broken"] == 0 and grouping["groups"] >= 40
    # By the doctor's own check.
    by_split = {s: [r for r in result.manifest if r["split"] == s] for s in result.splits}
    found = doctor.check_near_duplicates(
        {s: split.images for s, split in result.splits.items()},
        {s: [r["path"] for r in rows] for s, rows in by_split.items()},
        Rule(),
    )
    assert found == []
    # Each class's splits stay within a few images of the ratios.
    for c, name in enumerate(CLASSES):
        n = sum(int((split.labels == c).sum()) for split in result.splits.values())
        for s, want in split_sizes(n, RATIOS).items():
            got = int((result.splits[s].labels == c).sum())
            assert abs(got - want) <= max(2, 0.05 * n), (name, s, got, want)


def test_the_grouped_split_is_byte_reproducible(gallery) -> None:
    raw, _ = gallery
    first, second = _balance(raw), _balance(raw)
    assert first.manifest == second.manifest
    for s in first.splits:
        assert first.splits[s].images.tobytes() == second.splits[s].images.tobytes()


def test_without_grouping_the_bursts_cross_splits_and_the_doctor_warns(gallery) -> None:
    raw, origin = gallery
    result = _balance(raw, group=False)
    assert "near_copy_groups" not in result.report
    assert _pairs_across(result.manifest, origin) > 0


def test_classes_of_one_template_each_are_reported_not_hidden(tmp_path: Path) -> None:
    """Every image of a class is a noisy copy of its template: no group fits one split."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("stripes", "rings")):
        template = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
        big = np.asarray(Image.fromarray(template).resize((32, 32)), dtype=np.float64)
        (tmp_path / name).mkdir()
        for i in range(40):
            noisy = np.clip(big + rng.normal(0, 4, big.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(tmp_path / name / f"{c}_{i:02d}.png")
    result = _balance(tmp_path, size=32)
    grouping = result.report["near_copy_groups"]
    assert grouping["broken"] == 2 and sorted(grouping["broken_classes"]) == ["rings", "stripes"]
    # Split as well as it can: every class still has its share in every split.
    for s, want in split_sizes(40, RATIOS).items():
        assert np.bincount(result.splits[s].labels, minlength=2).tolist() == [want, want]
    (split_groups,) = doctor.check_split_groups(grouping)
    assert split_groups.code == "leakage.groups_split" and split_groups.level == "warn"
    assert "rings, stripes could not be kept apart" in split_groups.message
    by_split = {s: [r for r in result.manifest if r["split"] == s] for s in result.splits}
    (crossing,) = doctor.check_near_duplicates(
        {s: split.images for s, split in result.splits.items()},
        {s: [r["path"] for r in rows] for s, rows in by_split.items()},
        Rule(),
        {s: [r["label"] for r in rows] for s, rows in by_split.items()},
    )
    # 28 train, 6 val, 6 test of each class: 28*6 + 28*6 + 6*6 pairs cross, per class.
    assert crossing.evidence["pairs"] == 2 * (28 * 6 * 2 + 36)
    assert crossing.evidence["pairs_by_class"] == {"rings": 372, "stripes": 372}


def test_groups_go_whole_largest_first_and_singles_fill_the_shares() -> None:
    labels = np.repeat([0, 1], 100)
    groups = np.arange(200)
    groups[:10] = 0  # a burst of 10 in class 0
    groups[100:130] = 100  # 30 of class 1: fits in train only
    result = grouped_stratified_split(labels, groups, RATIOS, seed=3)
    assert len(set(result.assignment[:10])) == 1
    assert set(result.assignment[100:130]) == {"train"}
    assert result.broken == []
    for c in (0, 1):
        counts = {s: int((result.assignment[labels == c] == s).sum()) for s in RATIOS}
        assert counts == {"train": 70, "val": 15, "test": 15}
    again = grouped_stratified_split(labels, groups, RATIOS, seed=3)
    assert (again.assignment == result.assignment).all()
    other = grouped_stratified_split(labels, groups, RATIOS, seed=4)
    assert (other.assignment != result.assignment).any()
