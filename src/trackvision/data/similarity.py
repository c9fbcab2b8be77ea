"""Near-copy search: compact image descriptors, a copy rule, and a block-wise search with groups.

A copy that exact hashing misses (resized, re-encoded, cropped, brightness-shifted) keeps its
*structure*: the zero-mean, unit-norm, lightly blurred 16 x 16 grey thumbnail correlates with the
original's, while a global brightness or contrast change drops out of it. Three things make
distinct pictures look alike or copies look apart, and the rule answers each:

- **Crops** move the picture under the thumbnail grid. A pair whose structure correlates
  moderately is tried again under a small grid of crops of either picture (each side cut by up
  to ``Rule.crop``), and the best alignment counts.
- **Gradients** (structure that is almost all one plane, ``Rule.planar``) correlate with any
  other gradient of a similar angle. Two of them are copies only when their planes point the
  same way to a fraction of a degree and their colour agrees closely.
- **Flat pictures** have no structure to compare: two are copies only when their thumbnails
  agree level for level.

Every pair must also agree in colour (chromaticity, brightness divided out). The search is exact,
in blocks of rows: memory is one block of scores (``block`` x the other set), never the full
matrix, so it grows linearly with the number of images. A matrix product per block is fast
enough at 256 dimensions that no approximate index is used.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import sparse
from scipy.sparse import csgraph

SIDE = 16  # thumbnail side: small enough to ignore re-encoding, large enough to keep layout
FLAT_STD = 1.0  # grey levels: a thumbnail with less spread than this has no structure to match
AXES = ("cols", "rows", "cols")  # the crop search: one axis at a time, in this order


@dataclass(frozen=True)
class Rule:
    """When two descriptors are copies of one picture."""

    correlation: float = 0.96  # structure: correlation of the thumbnails, at the best crop
    candidate: float = 0.65  # below this uncropped correlation, no crop is tried: not copies
    crop: float = 0.08  # the crop search cuts each side by 0, crop / 2 or crop of the side
    chroma: float = 0.04  # colour: largest difference of the mean r/(r+g+b), g/(r+g+b), b/...
    planar: float = 0.9  # share of the structure a plane explains: the picture is a gradient
    plane_alignment: float = 0.9995  # two gradients: cosine of the angle between their planes
    plane_chroma: float = 0.008  # two gradients: the colour must agree this closely
    flat_difference: float = 1.0  # two flat pictures: mean |difference| of thumbnails, 0-255


@dataclass(frozen=True)
class Descriptors:
    """Per image: structure vector, its plane, thumbnail spread, chromaticity, raw thumbnail."""

    structure: np.ndarray  # N x SIDE*SIDE float32, zero mean, unit norm (zeros when flat)
    plane: np.ndarray  # N x 2 float32: the structure's x and y slopes (unit norm)
    planarity: np.ndarray  # N float32: share of the structure the plane explains, 0-1
    spread: np.ndarray  # N float32: standard deviation of the grey thumbnail, 0-255
    chroma: np.ndarray  # N x 3 float32: mean colour divided by its sum
    thumbnail: np.ndarray  # N x SIDE*SIDE float32 grey thumbnail, 0-255

    def __len__(self) -> int:
        return len(self.spread)

    @classmethod
    def concat(cls, parts: list[Descriptors]) -> Descriptors:
        """One set of descriptors from several, in order."""
        fields = ("structure", "plane", "planarity", "spread", "chroma", "thumbnail")
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


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
    spread = grey.std(axis=1)
    structure = _structure(grey)
    slopes = structure @ _ramps().T
    planarity = (slopes**2).sum(axis=1)
    plane = slopes / np.maximum(np.sqrt(planarity), 1e-6)[:, None]
    return Descriptors(structure, plane, planarity, spread, chroma, grey)


def _structure(grey: np.ndarray) -> np.ndarray:
    """Zero-mean, lightly blurred, unit-norm thumbnails; zeros for flat ones."""
    centred = grey - grey.mean(axis=1, keepdims=True)
    soft = _soften(centred)
    norms = np.linalg.norm(soft, axis=1, keepdims=True)
    flat = centred.std(axis=1, keepdims=True) < FLAT_STD
    return np.where(flat, 0.0, soft / np.maximum(norms, 1e-6)).astype(np.float32)


def _soften(centred: np.ndarray) -> np.ndarray:
    """A 3x3 binomial blur: a copy cropped by a few percent shifts by under a thumbnail pixel."""
    t = np.pad(centred.reshape(-1, SIDE, SIDE), ((0, 0), (1, 1), (1, 1)), mode="edge")
    rows = t[:, :-2, :] + 2 * t[:, 1:-1, :] + t[:, 2:, :]
    out = rows[:, :, :-2] + 2 * rows[:, :, 1:-1] + rows[:, :, 2:]
    return (out / 16.0).reshape(len(centred), -1)


@functools.cache
def _ramps() -> np.ndarray:
    """The unit x and y ramps over the thumbnail: a gradient's structure lies in their span."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    ramps = np.stack([(xx - xx.mean()).ravel(), (yy - yy.mean()).ravel()])
    return ramps / np.linalg.norm(ramps, axis=1, keepdims=True)


@functools.cache
def _soft_crops(crop: float) -> np.ndarray:
    """SIDE x SIDE matrices, one per (first cut, last cut) of an axis: resample, then blur.

    Applied to rows and to columns, they crop and resize a thumbnail and blur it as
    ``_soften`` does, in two matrix products.
    """
    cuts = (0.0, crop / 2, crop)
    pos = np.arange(SIDE) + 0.5
    soften = np.zeros((SIDE, SIDE + 2), dtype=np.float32)
    for k in range(SIDE):
        soften[k, k : k + 3] = (0.25, 0.5, 0.25)
    pad = np.zeros((SIDE + 2, SIDE), dtype=np.float32)  # edge padding, as np.pad(mode="edge")
    pad[np.arange(SIDE + 2), np.clip(np.arange(SIDE + 2) - 1, 0, SIDE - 1)] = 1
    mats = []
    for lo in cuts:
        for hi in cuts:
            src = np.clip((lo + pos / SIDE * (1 - lo - hi)) * SIDE - 0.5, 0, SIDE - 1)
            i0 = np.floor(src).astype(int)
            i1, w = np.minimum(i0 + 1, SIDE - 1), src - i0
            m = np.zeros((SIDE, SIDE), dtype=np.float32)
            np.add.at(m, (np.arange(SIDE), i0), 1 - w)
            np.add.at(m, (np.arange(SIDE), i1), w)
            mats.append(soften @ pad @ m)
    return np.stack(mats)


def aligned_correlation(
    a: Descriptors, i: np.ndarray, b: Descriptors, j: np.ndarray, crop: float, chunk: int = 1024
) -> np.ndarray:
    """Per pair, the best structure correlation over crops of either picture.

    The crop is searched one axis at a time (columns, then rows at the best columns, then
    columns again at the best rows): 27 crops a picture instead of all 81 combinations.
    """
    best = np.full(len(i), -1.0, dtype=np.float32)
    mats = _soft_crops(crop)
    for start in range(0, len(i), chunk):
        part = slice(start, start + chunk)
        for x, y in (
            (a.thumbnail[i[part]], b.structure[j[part]]),
            (b.thumbnail[j[part]], a.structure[i[part]]),
        ):
            grids = x.reshape(-1, SIDE, SIDE)
            rows = np.zeros(len(grids), dtype=np.int64)  # index of the no-cut matrix
            cols = rows.copy()
            for axis in AXES:
                score, pick = _best_cut(grids, y, mats, rows, cols, axis)
                (cols if axis == "cols" else rows)[:] = pick
            np.maximum(best[part], score, out=best[part])
    return best


def _best_cut(grids, y, mats, rows, cols, axis):
    """Each pair's best cut of one axis, the other axis's cut held.

    Pairs that hold the same cut share one matrix product per axis (a few large products,
    not one small one per pair).
    """
    held, transposed = (rows, False) if axis == "cols" else (cols, True)
    n, k = len(grids), len(mats)
    warped = np.empty((k, n, SIDE, SIDE), dtype=np.float32)
    for m in np.unique(held):
        who = np.flatnonzero(held == m)
        g = grids[who].transpose(0, 2, 1) if transposed else grids[who]
        # rows cut held: out[h] = M_held @ g @ M_h^T; columns cut held: the transpose of it.
        g = np.matmul(mats[m], g)  # held axis
        every = g.reshape(-1, SIDE) @ mats.transpose(2, 0, 1).reshape(SIDE, -1)
        every = every.reshape(len(who), SIDE, k, SIDE).transpose(2, 0, 1, 3)
        warped[:, who] = every.transpose(0, 1, 3, 2) if transposed else every
    warped = warped.reshape(k, n, -1)
    warped -= warped.mean(axis=2, keepdims=True)
    warped /= np.maximum(np.linalg.norm(warped, axis=2, keepdims=True), 1e-6)
    scores = np.einsum("hpk,pk->hp", warped, y)
    return scores.max(axis=0), scores.argmax(axis=0)


@dataclass
class _Candidates:
    """One block's pairs whose uncropped structure correlates at ``Rule.candidate`` or more."""

    i: np.ndarray
    j: np.ndarray
    score: np.ndarray
    certain: np.ndarray  # copies without a crop search
    unsure: np.ndarray  # copies only if a crop aligns them


def _reach(d: Descriptors, crop: float, chunk: int = 2048) -> np.ndarray:
    """Per image, how far any crop the search tries moves its structure (Euclidean distance).

    By Cauchy-Schwarz no crop can raise a pair's correlation by more than the larger reach of
    the two, so a pair that cannot reach ``Rule.correlation`` is never searched: smooth
    pictures, which crops barely change, skip most searches.
    """
    mats = _soft_crops(crop)
    reach = np.zeros(len(d), dtype=np.float32)
    for start in range(0, len(d), chunk):
        grids = d.thumbnail[start : start + chunk].reshape(-1, SIDE, SIDE)
        cut = np.matmul(mats[:, None], grids[None])  # rows x images x SIDE x SIDE
        for cols in mats:
            warped = np.matmul(cut, cols.T).reshape(len(mats), len(grids), -1)
            warped -= warped.mean(axis=2, keepdims=True)
            warped /= np.maximum(np.linalg.norm(warped, axis=2, keepdims=True), 1e-6)
            moved = np.linalg.norm(warped - d.structure[start : start + chunk], axis=2).max(0)
            np.maximum(reach[start : start + chunk], moved, out=reach[start : start + chunk])
    return reach


def _candidates(
    a: Descriptors, b: Descriptors, rule: Rule, block: int, upper: bool
) -> Iterator[_Candidates]:
    reach_a = _reach(a, rule.crop)
    reach_b = reach_a if upper else _reach(b, rule.crop)
    for start in range(0, len(a), block):
        first = start if upper else 0  # inside one set, only the columns right of the diagonal
        scores = a.structure[start : start + block] @ b.structure[first:].T
        ii, jj = np.nonzero(scores >= rule.candidate)
        i, j, score = ii + start, jj + first, scores[ii, jj]
        keep = (j > i) if upper else np.ones(len(i), dtype=bool)
        keep &= np.abs(a.chroma[i] - b.chroma[j]).max(axis=1) <= rule.chroma
        i, j, score = i[keep], j[keep], score[keep]
        planar = np.minimum(a.planarity[i], b.planarity[j]) >= rule.planar
        plane = (a.plane[i] * b.plane[j]).sum(axis=1) >= rule.plane_alignment
        close = np.abs(a.chroma[i] - b.chroma[j]).max(axis=1) <= rule.plane_chroma
        certain = np.where(planar, plane & close, score >= rule.correlation)
        reachable = score + np.maximum(reach_a[i], reach_b[j]) >= rule.correlation
        yield _Candidates(i, j, score, certain, ~planar & ~certain & reachable)
    yield from _flat_pairs(a, b, rule, upper)


def _flat_pairs(a: Descriptors, b: Descriptors, rule: Rule, upper: bool) -> Iterator[_Candidates]:
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
        score = 1.0 - diff[r[keep], c[keep]] / 255.0
        yes = np.ones(int(keep.sum()), dtype=bool)
        yield _Candidates(i[keep], j[keep], score, yes, ~yes)


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
    for c in _candidates(a, b, rule, block, upper):
        score = c.score.copy()
        if c.unsure.any():
            aligned = aligned_correlation(a, c.i[c.unsure], b, c.j[c.unsure], rule.crop)
            score[c.unsure] = aligned
        copies = c.certain | (c.unsure & (score >= rule.correlation))
        if copies.any():
            yield c.i[copies], c.j[copies], score[copies]


def copy_pairs(
    a: Descriptors, b: Descriptors, rule: Rule = Rule(), block: int = 1024
) -> Iterator[tuple[int, int, float]]:
    """Every pair (index in a, index in b, correlation) that ``rule`` calls a copy."""
    for i, j, score in copy_pair_blocks(a, b, rule, block):
        yield from zip(i.tolist(), j.tolist(), score.astype(float).tolist(), strict=True)


def near_copy_groups(d: Descriptors, rule: Rule = Rule(), block: int = 1024) -> np.ndarray:
    """A group id per image: images joined by a chain of copy pairs share one (0..groups-1).

    Pairs are folded into the groups block by block (scipy's connected components over the
    current groups plus the block's pairs), so memory stays linear in the images even when a
    group holds millions of pairs. A pair whose two images are already in one group needs no
    crop search: the certain pairs of a block are joined first, then only the unsure pairs
    still between two groups are searched, which keeps a class of near-identical pictures
    (a template and its noisy copies) from costing a search per pair.
    """
    groups = np.arange(len(d))
    for c in _candidates(d, d, rule, block, upper=True):
        groups = _join(groups, c.i[c.certain], c.j[c.certain])
        apart = c.unsure & (groups[c.i] != groups[c.j])
        if apart.any():
            aligned = aligned_correlation(d, c.i[apart], d, c.j[apart], rule.crop)
            hit = aligned >= rule.correlation
            groups = _join(groups, c.i[apart][hit], c.j[apart][hit])
    return np.unique(groups, return_inverse=True)[1]  # compact ids: 0..groups-1


def _join(groups: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    a, b = groups[i], groups[j]
    apart = a != b
    if not apart.any():
        return groups
    n = len(groups)
    edges = sparse.coo_matrix((np.ones(int(apart.sum()), np.int8), (a[apart], b[apart])), (n, n))
    return csgraph.connected_components(edges, directed=False)[1][groups]
