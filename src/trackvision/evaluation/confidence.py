"""How far to trust a score: 95% intervals of accuracy and weighted F1, and a binomial tail.

The normal quantile and the binomial tail come from scipy.special, imported inside the functions
since every stage imports the doctor and the data stages never need it. Not scipy.stats: its
import costs most of a second in every evaluate process (a search pays it per trial), and the
Wilson interval over the quantile is three lines; the tests hold both to scipy.stats.
The F1 bootstrap is numpy: a few thousand resamples, vectorised in chunks.
"""

from __future__ import annotations

import math

import numpy as np


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion; sound at small n and near 0 or 1."""
    if n == 0:
        return (0.0, 1.0)
    from scipy.special import ndtri

    z = float(ndtri(0.5 + confidence / 2))
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """Each class's F1 from confusion matrices shaped (..., true, predicted); 0 where a class is
    neither present nor predicted (scikit-learn's ``zero_division=0``)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    present_or_predicted = cm.sum(axis=-1) + cm.sum(axis=-2)
    return np.divide(
        2 * tp, present_or_predicted, out=np.zeros(tp.shape), where=present_or_predicted > 0
    )


def bootstrap_f1_interval(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_classes: int,
    resamples: int = 2000,
    seed: int = 0,
    chunk: int = 100,
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the weighted F1 (resampling test images).

    Resamples are drawn ``chunk`` at a time and each is reduced to three per-class counts (true
    positives, support, predictions), never to a full confusion matrix: memory stays at
    ``chunk x (n + n_classes)`` numbers, whatever the number of classes.
    """
    n = len(y_true)
    if n == 0:
        return (0.0, 1.0)
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    rng = np.random.default_rng(seed)
    weighted = np.empty(resamples)
    for start in range(0, resamples, chunk):
        m = min(chunk, resamples - start)
        idx = rng.integers(0, n, (m, n))
        offset = (np.arange(m) * n_classes)[:, None]
        true, pred = y_true[idx] + offset, y_pred[idx] + offset
        support, predicted = _counts(true, m, n_classes), _counts(pred, m, n_classes)
        tp = _counts(true[true == pred], m, n_classes).astype(float)
        both = support + predicted
        f1 = np.divide(2 * tp, both, out=np.zeros(tp.shape), where=both > 0)
        weighted[start : start + m] = (f1 * support).sum(axis=1) / n
    low, high = np.percentile(weighted, [2.5, 97.5])
    return (float(low), float(high))


def _counts(cells: np.ndarray, rows: int, n_classes: int) -> np.ndarray:
    """Per-row class counts of cells numbered ``row * n_classes + class``."""
    return np.bincount(cells.ravel(), minlength=rows * n_classes).reshape(rows, n_classes)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    from scipy.special import bdtr

    return float(bdtr(k, n, p))
