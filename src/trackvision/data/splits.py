"""Seeded, stratified choices of images: the splits of balance, the subsets of learning curves."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, ratios: dict[str, float], seed: int) -> np.ndarray:
    """Assign each index a split name, class by class, so every split keeps the class mix."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=object)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        rng.shuffle(idx)
        n = len(idx)
        n_test = round(n * ratios["test"])
        n_val = round(n * ratios["val"])
        # Every split with a non-zero ratio gets at least one image of each class when it can.
        if n >= 3:
            n_test = max(n_test, 1) if ratios["test"] > 0 else 0
            n_val = max(n_val, 1) if ratios["val"] > 0 else 0
        n_train = n - n_test - n_val
        assignment[idx[:n_train]] = "train"
        assignment[idx[n_train : n_train + n_val]] = "val"
        assignment[idx[n_train + n_val :]] = "test"
    return assignment


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of ``fraction`` of each class (at least one image per class), seeded."""
    labels = np.asarray(labels)
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [
        rng.choice(members, max(1, round(len(members) * fraction)), replace=False)
        for members in (np.flatnonzero(labels == c) for c in np.unique(labels))
    ]
    return np.sort(np.concatenate(keep))
