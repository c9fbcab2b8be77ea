"""Benchmark: precision and recall of the doctor's near-copy search on a labelled set of pairs.

Originals are varied pictures (the synthetic photos with and without text, crops of scikit-learn's
two sample photos) and deliberately hard low-texture ones (flat colours, soft gradients, blurred
noise). Each original gets one copy in another "split": resized, re-encoded, slightly cropped or
brightness-shifted; the same number of distinct pictures joins that split. Every cross-split pair
is labelled (copy or distinct), so precision and recall are exact counts. Usage:
    python benchmarks/near_duplicates.py [--originals 600] [--size 64]
        [--out reports/bench_near_duplicates.json]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from trackvision.atomic import write_json
from trackvision.data.similarity import copy_pairs, describe
from trackvision.data.sources.synthetic_text import generate_image

log = logging.getLogger("bench")
BASE = 256  # side the pictures are made at, before the pipeline's decode size


def low_texture(rng: np.random.Generator, kind: int) -> Image.Image:
    """A flat colour, a two-colour gradient at a random angle, or blurred noise."""
    if kind == 0:
        return Image.new("RGB", (BASE, BASE), tuple(int(c) for c in rng.integers(0, 256, 3)))
    if kind == 1:
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:BASE, 0:BASE] / (BASE - 1)
        t = np.clip((np.cos(theta) * xx + np.sin(theta) * yy + 1) / 2, 0, 1)[..., None]
        return Image.fromarray(np.clip(a * (1 - t) + b * t, 0, 255).astype(np.uint8))
    noise = rng.uniform(0, 255, (BASE, BASE, 3)).astype(np.uint8)
    radius = float(rng.uniform(4, 16))
    return Image.fromarray(noise).filter(ImageFilter.GaussianBlur(radius))


TILE = 100  # disjoint tiles of scikit-learn's two 427 x 640 photos: 4 x 6 each


def photo_tile(k: int) -> Image.Image:
    """The k-th distinct photo: a disjoint tile, in one of its 8 orientations, per k."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    tile, turn = k % 48, (k // 48) % 8
    photo = photos[tile // 24]
    y, x = (tile % 24) // 6 * TILE, (tile % 24) % 6 * TILE
    img = Image.fromarray(photo[y : y + TILE, x : x + TILE]).resize((BASE, BASE))
    img = img.rotate(90 * (turn % 4))
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if turn >= 4 else img


def original(rng: np.random.Generator, i: int) -> tuple[Image.Image, str]:
    kind = i % 5
    if kind < 2:
        return generate_image(11, i, BASE, bool(kind)), "synthetic"
    if kind == 2:
        return photo_tile(i // 5), "photo_tile"
    sub = int(rng.integers(0, 3))
    return low_texture(rng, sub), ("flat", "gradient", "blurred_noise")[sub]


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def make_copy(rng: np.random.Generator, img: Image.Image, edit: str) -> Image.Image:
    if edit == "resized":
        side = int(rng.integers(80, 180))
        return img.resize((side, side), Image.Resampling.BILINEAR)
    if edit == "reencoded":
        return jpeg(img, int(rng.integers(40, 80)))
    if edit == "cropped":
        cut = int(BASE * rng.uniform(0.02, 0.06))
        return img.crop((cut, cut, BASE - cut, BASE - cut))
    factor = float(rng.choice([rng.uniform(0.75, 0.9), rng.uniform(1.1, 1.25)]))
    return jpeg(ImageEnhance.Brightness(img).enhance(factor), 90)


EDITS = ("resized", "reencoded", "cropped", "brightness")


def decoded(img: Image.Image, size: int) -> np.ndarray:
    """What the balance stage holds: the picture resized to ``data.image_size``."""
    return np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))


def build(n: int, size: int, seed: int = 0):
    """Split A: n originals. Split B: one copy of each original, then n distinct pictures."""
    rng = np.random.default_rng(seed)
    kinds, a, b, edits = [], [], [], []
    for i in range(n):
        img, kind = original(rng, i)
        kinds.append(kind)
        a.append(decoded(img, size))
        edit = EDITS[i % len(EDITS)]
        edits.append(edit)
        b.append(decoded(make_copy(rng, img, edit), size))
    for i in range(n, 2 * n):
        b.append(decoded(original(rng, i)[0], size))
    return np.stack(a), np.stack(b), kinds, edits


def score(n: int, size: int) -> dict:
    a, b, kinds, edits = build(n, size)
    found = {(i, j) for i, j, _ in copy_pairs(describe(a), describe(b))}
    true = {(i, i) for i in range(n)}
    tp = len(found & true)
    false = sorted(found - true)
    recall_by_edit = {
        e: round(sum((i, i) in found for i in range(n) if edits[i] == e) / edits.count(e), 4)
        for e in EDITS
    }
    missed_by_kind = {
        k: sum((i, i) not in found for i in range(n) if kinds[i] == k) for k in set(kinds)
    }
    false_by_kind = {}
    for i, j in false:
        key = f"{kinds[i]}~{kinds[j] if j < n else 'distinct'}"
        false_by_kind[key] = false_by_kind.get(key, 0) + 1
    return {
        "copy_pairs": n,
        "distinct_pairs": n * 2 * n - n,
        "found": len(found),
        "true_positives": tp,
        "false_positives": len(false),
        "precision": round(tp / len(found), 4) if found else 1.0,
        "recall": round(tp / n, 4),
        "recall_by_edit": recall_by_edit,
        "missed_by_kind": missed_by_kind,
        "false_positives_by_kind": false_by_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=600)
    parser.add_argument("--size", type=int, default=64, help="decode size (data.image_size)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_near_duplicates.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = {"size": args.size, **score(args.originals, args.size)}
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
