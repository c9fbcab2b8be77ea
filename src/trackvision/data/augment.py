"""Augmentation: seeded offline copies of the training split, and cheap online batch transforms."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from trackvision.config import AugmentSettings
from trackvision.data.packed import Split

if TYPE_CHECKING:
    from torchvision.transforms import v2


def build_transform(settings: AugmentSettings, size: int, channels: int) -> v2.Compose:
    """The offline transform for uint8 CHW tensors of side ``size``."""
    # Here, not at the top: torchvision's import costs seconds that training (which imports this
    # module for its online transforms) never needs.
    from torchvision.transforms import v2

    jitter = settings.color_jitter
    steps: list[torch.nn.Module] = []
    if settings.rotation > 0:
        steps.append(
            v2.RandomRotation(settings.rotation, interpolation=v2.InterpolationMode.BILINEAR)
        )
    if settings.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(settings.hflip))
    if settings.crop_scale < 1:
        steps.append(
            v2.RandomResizedCrop(size, scale=(settings.crop_scale, 1.0), ratio=(0.8, 1.25))
        )
    if jitter > 0:
        # Saturation means nothing for greyscale images.
        steps.append(v2.ColorJitter(jitter, jitter, jitter if channels == 3 else 0))
    return v2.Compose(steps)


def augment_split(split: Split, settings: AugmentSettings) -> Split:
    """Originals followed by ``copies`` augmented versions of each, reproducible from the seed."""
    if settings.copies == 0:
        return Split(np.asarray(split.images), np.asarray(split.labels))
    n, h, _, c = split.images.shape
    transform = build_transform(settings, h, c)
    copies = np.empty((settings.copies * n, *split.images.shape[1:]), dtype=np.uint8)
    # Forked so the seed fixes these copies without disturbing anyone else's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        for k in tqdm(range(settings.copies * n), desc="augment", unit="img", disable=None):
            img = torch.from_numpy(np.array(split.images[k % n])).permute(2, 0, 1)
            copies[k] = transform(img).permute(1, 2, 0).numpy()
    images = np.concatenate([np.asarray(split.images), copies])
    labels = np.concatenate(
        [np.asarray(split.labels)] + [np.asarray(split.labels)] * settings.copies
    )
    return Split(images, labels)


def random_flip_shift(
    x: torch.Tensor, generator: torch.Generator, max_shift: int, flip: bool = True
) -> torch.Tensor:
    """Online augmentation on a float NCHW batch: random horizontal flips and translations.

    Each image is flipped with probability 1/2, then shifted by up to ``max_shift`` px each way
    with the edge pixels repeated (replicate padding).
    """
    n, c, h, w = x.shape
    flipped = torch.rand(n, generator=generator) < 0.5 if flip else None
    if max_shift <= 0:
        if flipped is None:
            return x
        return torch.where(flipped[:, None, None, None].to(x.device), x.flip(3), x)
    shift = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator) - max_shift
    # One gather for the whole batch (a slice per image was 3x slower at 28 px): replicate
    # padding is a source index clamped to the edge, and a flip reads columns from the right.
    rows = (shift[:, :1] + torch.arange(h)).clamp_(0, h - 1)
    cols = (shift[:, 1:] + torch.arange(w)).clamp_(0, w - 1)
    if flipped is not None:
        cols = torch.where(flipped[:, None], (w - 1) - cols, cols)
    source = (rows[:, :, None] * w + cols[:, None, :]).flatten(1).to(x.device)
    picked = x.flatten(2).gather(2, source[:, None, :].expand(n, c, h * w))
    return picked.view(n, c, h, w)
