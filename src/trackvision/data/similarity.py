"""Near-copy search: compact image descriptors and a block-wise all-pairs search over them.

A copy that exact hashing misses (resized, re-encoded, slightly cropped, brightness-shifted)
keeps its *structure*: the zero-mean, unit-norm grey thumbnail correlates with the original's
almost perfectly, while a global brightness or contrast change drops out of it. Two further tests
keep distinct low-texture pictures (flat colours, soft gradients, blurred noise) apart, since
their thumbnails correlate by accident of smoothness: the contrast of the two must agree, and so
must their colour once brightness is divided out. A flat picture has no structure to compare, so
two flat ones count as copies only when their thumbnails are the same to within a few levels.

The search is exact, in blocks of rows: memory is one block of scores (``block`` x the other
split), never the full matrix, so it grows linearly with the number of images. At this
descriptor's 256 dimensions a matrix product per block searches 100,000 x 25,000 pairs in
seconds on two cores, which is why no approximate index is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import sparse
from scipy.sparse import csgraph

SIDE = 16  # thumbnail side: small enough to ignore re-encoding, large enough to keep layout
FLAT_STD = 1.0  # grey levels: a thumbnail with less spread than this has no structure to match


@dataclass(frozen=True)
class Rule:
    """When two descriptors are copies of one picture."""

    correlation: float = 0.9  # structure: correlation of the normalised grey thumbnails
    smooth_correlation: float = 0.98  # the same, when either picture is smooth (little detail)
    smooth_detail: float = 0.5  # detail below this = smooth (gradients, soft blur)
    contrast_ratio: float = 1.5  # the larger thumbnail spread over the smaller one, at most
    chroma: float = 0.04  # colour: largest difference of the mean r/(r+g+b), g/(r+g+b), b/...
    flat_difference: float = 1.0  # two flat pictures: mean |difference| of thumbnails, 0-255


@dataclass(frozen=True)
class Descriptors:
    """Per image: normalised structure vector, thumbnail spread, chromaticity, raw thumbnail."""

    structure: np.ndarray  # N x SIDE*SIDE float32, zero mean, unit norm (zeros when flat)
    spread: np.ndarray  # N float32: standard deviation of the grey thumbnail, 0-255
    chroma: np.ndarray  # N x 3 float32: mean colour divided by its sum
    thumbnail: np.ndarray  # N x SIDE*SIDE float32 grey thumbnail, 0-255
    detail: np.ndarray  # N float32: fine structure over spread; smooth pictures are near 0

    def __len__(self) -> int:
        return len(self.spread)


def describe(images: np.ndarray) -> Descriptors:
    """N x H x W x C uint8 images -> their descriptors (a few hundred bytes per image)."""
    n = len(images)
    grey = np.empty((n, SIDE * SIDE), dtype=np.float32)
    chroma = np.empty((n, 3), dtype=np.float32)
    for i, image in enumerate(images):
        rgb = np.asarray(image, dtype=np.float32)
        if rgb.shape[-1] == 1:
            rgb = np.repeat(rgb, 3, axis=-1)
        means = rgb.reshape(-1, 3).mean(axis=0) + 1.0  # +1: black stays defined
        chroma[i] = means / means.sum()
        pil = Image.fromarray(np.asarray(image)[..., 0] if image.shape[-1] == 1 else image)
        grey[i] = np.asarray(
            pil.convert("L").resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float32
        ).reshape(-1)
    centred = grey - grey.mean(axis=1, keepdims=True)
    spread = centred.std(axis=1)
    detail = _detail(centred)
    soft = _soften(centred)
    norms = np.linalg.norm(soft, axis=1, keepdims=True)
    structure = np.where(spread[:, None] >= FLAT_STD, soft / np.maximum(norms, 1e-6), 0.0)
    return Descriptors(structure.astype(np.float32), spread, chroma, grey, detail)


def _grid(flat: np.ndarray) -> np.ndarray:
    return flat.reshape(-1, SIDE, SIDE)


def _detail(centred: np.ndarray) -> np.ndarray:
    """Fine structure relative to overall spread (Laplacian energy / std): ~0 for gradients."""
    t = _grid(centred)
    lap = 4 * t[:, 1:-1, 1:-1] - t[:, :-2, 1:-1] - t[:, 2:, 1:-1] - t[:, 1:-1, :-2] - t[:, 1:-1, 2:]
    return (np.sqrt((lap**2).mean(axis=(1, 2))) / np.maximum(t.std(axis=(1, 2)), 1e-6)).astype(
        np.float32
    )


def _soften(centred: np.ndarray) -> np.ndarray:
    """A 3x3 binomial blur: a copy cropped by a few percent shifts by under a thumbnail pixel."""
    t = np.pad(_grid(centred), ((0, 0), (1, 1), (1, 1)), mode="edge")
    rows = t[:, :-2, :] + 2 * t[:, 1:-1, :] + t[:, 2:, :]
    out = rows[:, :, :-2] + 2 * rows[:, :, 1:-1] + rows[:, :, 2:]
    return (out / 16.0).reshape(len(centred), -1)


def _confirm(a: Descriptors, i: np.ndarray, b: Descriptors, j: np.ndarray, rule: Rule):
    """Of candidate pairs (i, j), those the contrast, colour and flat-picture tests accept."""
    sa, sb = a.spread[i], b.spread[j]
    ratio = np.maximum(sa, sb) / np.maximum(np.minimum(sa, sb), 1e-6)
    colour = np.abs(a.chroma[i] - b.chroma[j]).max(axis=1)
    textured = (sa >= FLAT_STD) & (sb >= FLAT_STD) & (ratio <= rule.contrast_ratio)
    return textured & (colour <= rule.chroma)


def _needed(a: Descriptors, i: np.ndarray, b: Descriptors, j: np.ndarray, rule: Rule):
    """The correlation a pair must reach: smooth pictures correlate by accident, so more."""
    smooth = np.minimum(a.detail[i], b.detail[j]) < rule.smooth_detail
    return np.where(smooth, rule.smooth_correlation, rule.correlation)


def _flat_pairs(a: Descriptors, b: Descriptors, rule: Rule, upper: bool) -> PairBlocks:
    """Flat pictures have no structure: copies only when their thumbnails nearly agree."""
    fa, fb = np.flatnonzero(a.spread < FLAT_STD), np.flatnonzero(b.spread < FLAT_STD)
    if not len(fa) or not len(fb):
        return
    step = max(1, (1 << 24) // (len(fb) * SIDE * SIDE))  # at most 16 M differences at once
    for start in range(0, len(fa), step):
        rows = fa[start : start + step]
        diff = np.abs(a.thumbnail[rows, None, :] - b.thumbnail[None, fb, :]).mean(axis=2)
        r, c = np.nonzero(diff <= rule.flat_difference)
        i, j = rows[r], fb[c]
        keep = np.abs(a.chroma[i] - b.chroma[j]).max(axis=1) <= rule.chroma
        if upper:
            keep &= j > i
        if keep.any():
            yield i[keep], j[keep], 1.0 - diff[r[keep], c[keep]] / 255.0


PairBlocks = Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]


def copy_pair_blocks(
    a: Descriptors, b: Descriptors | None = None, rule: Rule = Rule(), block: int = 1024
) -> PairBlocks:
    """The pairs ``rule`` calls copies, as arrays (indices in a, indices in b, correlations).

    With ``b`` None, the pairs inside ``a``, each once (i < j). Rows of ``a`` are scored
    ``block`` at a time: peak memory is ``block * len(b)`` floats whatever the sizes.
    """
    upper = b is None
    b = a if b is None else b
    if not len(a) or not len(b):
        return
    for start in range(0, len(a), block):
        first = start if upper else 0  # inside one set, only the columns right of the diagonal
        scores = a.structure[start : start + block] @ b.structure[first:].T
        ii, jj = np.nonzero(scores >= rule.correlation)
        i, j = ii + start, jj + first
        keep = _confirm(a, i, b, j, rule) & (scores[ii, jj] >= _needed(a, i, b, j, rule))
        if upper:
            keep &= j > i
        if keep.any():
            yield i[keep], j[keep], scores[ii[keep], jj[keep]]
    yield from _flat_pairs(a, b, rule, upper)


def copy_pairs(
    a: Descriptors, b: Descriptors, rule: Rule = Rule(), block: int = 1024
) -> Iterator[tuple[int, int, float]]:
    """Every pair (index in a, index in b, correlation) that ``rule`` calls a copy."""
    for i, j, score in copy_pair_blocks(a, b, rule, block):
        yield from zip(i.tolist(), j.tolist(), score.astype(float).tolist(), strict=True)


def near_copy_groups(d: Descriptors, rule: Rule = Rule(), block: int = 1024) -> np.ndarray:
    """A group id per image: images joined by a chain of copy pairs share one (0..groups-1).

    The pairs are folded into the groups block by block (scipy's connected components over
    the current groups plus the block's pairs), so memory stays linear in the images even when
    a group holds millions of pairs.
    """
    groups = np.arange(len(d))
    for i, j, _ in copy_pair_blocks(d, None, rule, block):
        a, b = groups[i], groups[j]
        apart = a != b
        if not apart.any():
            continue
        edges = sparse.coo_matrix(
            (np.ones(int(apart.sum()), dtype=np.int8), (a[apart], b[apart])), (len(d), len(d))
        )
        _, merged = csgraph.connected_components(edges, directed=False)
        groups = merged[groups]
    return np.unique(groups, return_inverse=True)[1]  # compact ids: 0..groups-1
