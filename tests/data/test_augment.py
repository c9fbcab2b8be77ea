"""Augmentation: seeded, K copies of train, and the online batch transform keeps shapes."""

from __future__ import annotations

import numpy as np
import torch

from trackvision.config import AugmentSettings
from trackvision.data.augment import augment_split, random_flip_shift
from trackvision.data.packed import Split

SETTINGS = AugmentSettings(
    copies=2, rotation=15, hflip=0.5, crop_scale=0.8, color_jitter=0.2, seed=7
)


def _split(n: int = 6, channels: int = 3) -> Split:
    rng = np.random.default_rng(0)
    return Split(rng.integers(0, 255, (n, 16, 16, channels), dtype=np.uint8), np.arange(n) % 2)


def test_copies_follow_the_originals_with_their_labels() -> None:
    split = _split()
    out = augment_split(split, SETTINGS)
    assert out.images.shape == (18, 16, 16, 3)
    assert (out.images[:6] == split.images).all()
    assert out.labels.tolist() == split.labels.tolist() * 3
    assert not (out.images[6:12] == split.images).all()


def test_same_seed_same_copies_and_global_rng_untouched() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = augment_split(_split(), SETTINGS)
    assert torch.rand(1) == expected_next  # augmenting did not consume the caller's RNG
    b = augment_split(_split(), SETTINGS)
    assert (a.images == b.images).all()


def test_greyscale_images_are_augmented() -> None:
    out = augment_split(_split(channels=1), SETTINGS)
    assert out.images.shape == (18, 16, 16, 1)


def test_online_flip_shift_keeps_shape_and_is_seeded() -> None:
    x = torch.randn(8, 3, 16, 16)
    a = random_flip_shift(x, torch.Generator().manual_seed(0), max_shift=3)
    b = random_flip_shift(x, torch.Generator().manual_seed(0), max_shift=3)
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
