"""How far to trust a score: 95% intervals of accuracy and weighted F1 (scipy.stats)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion; sound at small n and near 0 or 1."""
    if n == 0:
        return (0.0, 1.0)
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Weighted F1 of each row of ``y_true``/``y_pred`` (shaped (..., n)), scikit-learn's
    definition (a class neither present nor predicted scores 0).

    scikit-learn's ``f1_score`` takes one sample at a time: over a bootstrap's thousands of
    resamples of a large test set, 20x slower than these three per-row class counts (true
    positives, support, predictions), which never build a confusion matrix per resample.
    """
    y_true, y_pred = np.atleast_2d(y_true), np.atleast_2d(y_pred)
    rows, n = y_true.shape[0], y_true.shape[-1]
    offset = (np.arange(rows) * n_classes)[:, None]
    true, pred = y_true + offset, y_pred + offset
    support, predicted = _counts(true, rows, n_classes), _counts(pred, rows, n_classes)
    tp = _counts(true[true == pred], rows, n_classes).astype(float)
    both = support + predicted
    f1 = np.divide(2 * tp, both, out=np.zeros(tp.shape), where=both > 0)
    return (f1 * support).sum(axis=1) / n


def _counts(cells: np.ndarray, rows: int, n_classes: int) -> np.ndarray:
    """Per-row class counts of cells numbered ``row * n_classes + class``."""
    return np.bincount(cells.ravel(), minlength=rows * n_classes).reshape(rows, n_classes)


def bootstrap_f1_interval(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_classes: int,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the weighted F1, resampling test images (pairs).

    Resamples are drawn 100 at a time: memory stays at ``100 x (n + n_classes)`` numbers.
    """
    if len(y_true) == 0:
        return (0.0, 1.0)
    result = stats.bootstrap(
        (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)),
        lambda t, p, axis=-1: weighted_f1(t, p, n_classes),
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        batch=100,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return (float(ci.low), float(ci.high))
