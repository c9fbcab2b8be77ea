"""Labelled galleries of near-copies: bursts of edited copies among hard distinct pictures.

Shared by the near-copy tests and ``benchmarks/near_duplicates.py``. Every picture carries the id
of the original it was made from, so every pair is known to be a copy or not. The distinct
pictures are chosen to be hard for a copy rule: low-texture pictures drawn from narrow palettes
(soft gradients, blurred noise, flat walls with a few strokes), whose small thumbnails look alike,
and disjoint tiles of real photos. Copies are made with the edits a gallery is full of: resized,
re-encoded, cropped (off-centre) and brightness-shifted.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance
from scipy import ndimage

BASE = 256  # side the pictures are made at, before a pipeline decodes them
KINDS = ("photo", "gradient", "blurred_noise", "wall")
EDITS = ("resized", "reencoded", "cropped", "brightness")
# Narrow palettes make distinct low-texture pictures look alike: skies, walls, paper, concrete.
PALETTE = np.array(
    [
        (200, 215, 235),
        (235, 225, 205),
        (128, 128, 128),
        (90, 140, 200),
        (240, 240, 236),
        (60, 60, 64),
    ]
)
TILE = 100  # disjoint tiles of scikit-learn's two 427 x 640 photos: 4 x 6 each


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(load_sample_images().images)


@functools.cache
def _textured_tiles() -> tuple[int, ...]:
    """Tiles with detail: the flat sky tiles of the photos look alike whatever their place."""
    return tuple(k for k in range(48) if np.asarray(_tile(k).convert("L"), float).std() >= 25)


def _tile(tile: int) -> Image.Image:
    photo = _photos()[tile // 24]
    y, x = (tile % 24) // 6 * TILE, (tile % 24) % 6 * TILE
    return Image.fromarray(photo[y : y + TILE, x : x + TILE]).resize((BASE, BASE))


def photo_tile(k: int, textured: bool = False) -> Image.Image:
    """The k-th distinct photo: a disjoint tile in one of its 8 orientations (k < 384), or of
    the textured tiles alone."""
    tiles = _textured_tiles() if textured else tuple(range(48))
    tile, turn = tiles[k % len(tiles)], (k // len(tiles)) % 8
    img = _tile(tile).rotate(90 * (turn % 4))
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if turn >= 4 else img


def _near(rng: np.random.Generator, spread: float) -> np.ndarray:
    return np.clip(PALETTE[rng.integers(len(PALETTE))] + rng.uniform(-spread, spread, 3), 0, 255)


def gradient(rng: np.random.Generator) -> Image.Image:
    """Two nearby colours of one palette entry, blended at a random angle."""
    a = _near(rng, 25)
    step = rng.uniform(40, 90) * rng.choice([-1, 1])
    b = np.clip(a + step + rng.uniform(-15, 15, 3), 0, 255)
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:BASE, 0:BASE] / (BASE - 1)
    t = np.clip((np.cos(theta) * xx + np.sin(theta) * yy + 1) / 2, 0, 1)[..., None]
    return Image.fromarray((a * (1 - t) + b * t).astype(np.uint8))


def blurred_noise(rng: np.random.Generator) -> Image.Image:
    """Soft blobs around one palette colour: noise blurred, then stretched to a visible contrast."""
    blurred = ndimage.gaussian_filter(rng.normal(0, 1, (BASE, BASE)), rng.uniform(4, 16))
    field = (blurred - blurred.mean()) / max(float(blurred.std()), 1e-6) * rng.uniform(6, 40)
    return Image.fromarray(np.clip(_near(rng, 20) + field[..., None], 0, 255).astype(np.uint8))


def wall(rng: np.random.Generator) -> Image.Image:
    """A flat wall of a palette colour with a faint grain and one to four thin strokes."""
    colour = _near(rng, 12)
    grain = rng.normal(0, 2, (BASE, BASE, 1))
    img = Image.fromarray(np.clip(colour + grain, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 5))):
        ink = tuple(int(c) for c in np.clip(colour - rng.uniform(40, 140), 0, 255))
        points = [tuple(int(v) for v in rng.integers(0, BASE, 2)) for _ in range(2)]
        draw.line(points, fill=ink, width=int(rng.integers(2, 7)))
    return img


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def edited(
    rng: np.random.Generator, img: Image.Image, edit: str, centred_crops: bool = False
) -> Image.Image:
    """One edited copy: resized, re-encoded, cropped by 2-8% a side (or, centred, 2-6% on
    every side), or brightness-shifted."""
    if edit == "resized":
        side = int(rng.integers(80, 200))
        return img.resize((side, side), Image.Resampling.BILINEAR)
    if edit == "reencoded":
        return _jpeg(img, int(rng.integers(30, 76)))
    if edit == "cropped" and centred_crops:
        cut = int(BASE * rng.uniform(0.02, 0.06))
        return img.crop((cut, cut, BASE - cut, BASE - cut))
    if edit == "cropped":
        left, top, right, bottom = (BASE * rng.uniform(0.02, 0.08, 4)).astype(int)
        return img.crop((left, top, BASE - right, BASE - bottom))
    factor = float(rng.choice([rng.uniform(0.75, 0.9), rng.uniform(1.1, 1.25)]))
    return _jpeg(ImageEnhance.Brightness(img).enhance(factor), 90)


@dataclass
class Gallery:
    """Pictures and, for each, the original it comes from (copies share it), kind and edit."""

    pictures: list[Image.Image] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    edit: list[str] = field(default_factory=list)

    def add(self, picture: Image.Image, group: int, kind: str, edit: str) -> None:
        self.pictures.append(picture)
        self.group.append(group)
        self.kind.append(kind)
        self.edit.append(edit)

    def decoded(self, size: int) -> np.ndarray:
        """N x size x size x 3 uint8: what the balance stage holds of each picture."""
        return np.stack(
            [
                np.asarray(p.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
                for p in self.pictures
            ]
        )

    def copy_pairs(self) -> set[tuple[int, int]]:
        """Every (i, j), i < j, of two pictures made from one original."""
        members: dict[int, list[int]] = {}
        for i, g in enumerate(self.group):
            members.setdefault(g, []).append(i)
        return {(a, b) for m in members.values() for k, a in enumerate(m) for b in m[k + 1 :]}


def picture(rng: np.random.Generator, kind: str, photo_index: int) -> Image.Image:
    if kind in ("photo", "textured_photo"):
        return photo_tile(photo_index, textured=kind == "textured_photo")
    return {"gradient": gradient, "blurred_noise": blurred_noise, "wall": wall}[kind](rng)


def bursts(
    originals: int,
    copies: int | None,
    distinct: int,
    seed: int = 0,
    kinds=KINDS,
    centred_crops: bool = False,
) -> Gallery:
    """``originals`` pictures, each with a burst of edited copies, then ``distinct`` more.

    ``copies`` per original (each edit in turn), or ``None`` for 1 to 4 in turn. The kinds take
    turns; the photo tiles are all different, so at most 384 photos in all ("photo"), or 248 of
    the textured ones ("textured_photo").
    """
    rng = np.random.default_rng(seed)
    gallery = Gallery()
    photos = 0
    for i in range(originals + distinct):
        kind = kinds[i % len(kinds)]
        img = picture(rng, kind, photos)
        photos += kind.endswith("photo")
        gallery.add(img, i, kind, "original")
        if i < originals:
            for k in range(copies if copies is not None else 1 + i // len(kinds) % 4):
                edit = EDITS[(i + k) % len(EDITS)]
                gallery.add(edited(rng, img, edit, centred_crops), i, kind, edit)
    return gallery
