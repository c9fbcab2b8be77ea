"""Augmentation: seeded, K copies of train, and the online batch transform keeps shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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


def _flip_shift_by_hand(
    x: torch.Tensor, generator: torch.Generator, max_shift: int, flip: bool
) -> torch.Tensor:
    """The plain way, image by image: flip, pad with the edge pixels, slice a window."""
    n, _, h, w = x.shape
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if max_shift == 0:
        return x
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).tolist()
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]
    )


@pytest.mark.parametrize("shape", [(16, 1, 28, 28), (8, 3, 9, 13), (4, 2, 3, 3)])
@pytest.mark.parametrize("max_shift", [0, 1, 4])
@pytest.mark.parametrize("flip", [True, False])
def test_online_flip_shift_equals_pad_and_slice_image_by_image(shape, max_shift, flip) -> None:
    x = torch.randn(*shape)
    got = random_flip_shift(x, torch.Generator().manual_seed(5), max_shift, flip=flip)
    expected = _flip_shift_by_hand(x, torch.Generator().manual_seed(5), max_shift, flip)
    assert torch.equal(got, expected)  # same draws, same pixels: training is unchanged
