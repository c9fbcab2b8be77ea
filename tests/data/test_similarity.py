"""The near-copy search: which pairs it calls copies, and that blocks change nothing but memory."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from trackvision.data.similarity import copy_pairs, describe, near_copy_groups
from trackvision.data.sources.synthetic_text import generate_image


def _decoded(img: Image.Image, size: int = 64) -> np.ndarray:
    return np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def _gradient(a, b, angle: float, side: int = 128) -> Image.Image:
    yy, xx = np.mgrid[0:side, 0:side] / (side - 1)
    t = np.clip((np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2, 0, 1)[..., None]
    return Image.fromarray((np.array(a) * (1 - t) + np.array(b) * t).astype(np.uint8))


def _low_texture() -> list[Image.Image]:
    """Distinct smooth pictures whose small thumbnails look alike."""
    rng = np.random.default_rng(1)
    flats = [
        Image.new("RGB", (128, 128), c) for c in [(120, 120, 120), (128, 124, 120), (20, 90, 200)]
    ]
    gradients = [
        _gradient((0, 0, 60), (80, 80, 255), 0.3),
        _gradient((40, 0, 0), (255, 90, 90), 0.3),
        _gradient((0, 0, 60), (80, 80, 255), 2.0),
    ]
    blurred = [
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).filter(
            ImageFilter.GaussianBlur(6)
        )
        for _ in range(6)
    ]
    return flats + gradients + blurred


def test_edited_copies_are_found_and_distinct_low_texture_pictures_are_not() -> None:
    photos = [generate_image(3, i, 128, bool(i % 2)) for i in range(8)]
    smooth = _low_texture()
    originals = photos + smooth
    copies = [
        photos[0].resize((90, 90)),  # resized
        _jpeg(photos[1], 45),  # re-encoded
        photos[2].crop((5, 5, 123, 123)),  # slightly cropped
        _jpeg(ImageEnhance.Brightness(photos[3]).enhance(1.2), 90),  # brighter
        _jpeg(smooth[4], 60),  # a re-encoded gradient
        smooth[8].resize((100, 100)),  # a resized blurred-noise picture
    ]
    copy_of = [0, 1, 2, 3, 8 + 4, 8 + 8]
    distinct = [generate_image(4, i, 128, bool(i % 2)) for i in range(8)]
    a = describe(np.stack([_decoded(im) for im in originals]))
    b = describe(np.stack([_decoded(im) for im in copies + distinct]))
    found = {(i, j) for i, j, _ in copy_pairs(a, b)}
    assert found == {(orig, j) for j, orig in enumerate(copy_of)}
    # Among themselves, the smooth pictures are all distinct.
    s = describe(np.stack([_decoded(im) for im in smooth]))
    assert {(i, j) for i, j, _ in copy_pairs(s, s) if i != j} == set()


def test_block_wise_search_equals_the_full_search() -> None:
    rng = np.random.default_rng(0)
    base = [generate_image(8, i, 64, bool(i % 2)) for i in range(60)]
    a = np.stack([_decoded(im) for im in base])
    picks = rng.choice(60, 25, replace=False)
    b = np.stack([_decoded(_jpeg(base[k], 70)) for k in picks] + [_decoded(im) for im in base[:5]])
    da, db = describe(a), describe(b)
    whole = sorted(copy_pairs(da, db, block=len(a)))
    for block in (1, 7, 16):
        parts = sorted(copy_pairs(da, db, block=block))
        assert [(i, j) for i, j, _ in parts] == [(i, j) for i, j, _ in whole]
        assert np.allclose([c for *_, c in parts], [c for *_, c in whole], atol=1e-5)
    assert {(i, j) for i, j, _ in whole} >= {(int(k), j) for j, k in enumerate(picks)}


def test_groups_join_chains_of_copies_whatever_the_block_size() -> None:
    base = [generate_image(12, i, 96, bool(i % 2)) for i in range(30)]
    chain = [base[0].resize((80, 80)), _jpeg(base[0].resize((80, 80)), 50)]  # a copy of a copy
    images = np.stack([_decoded(im) for im in base + chain + [_jpeg(base[5], 60)]])
    described = describe(images)
    groups = near_copy_groups(described, block=len(images))
    assert groups[0] == groups[30] == groups[31] and groups[5] == groups[32]
    assert len(set(groups.tolist())) == len(images) - 3
    for block in (1, 4, 9):
        assert near_copy_groups(described, block=block).tolist() == groups.tolist()
