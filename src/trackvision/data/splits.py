"""Seeded, stratified choices of images: the splits of balance, the subsets of learning curves."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


def split_sizes(n: int, ratios: dict[str, float]) -> dict[str, int]:
    """How many of a class's ``n`` images each split gets."""
    n_test = round(n * ratios["test"])
    n_val = round(n * ratios["val"])
    # Every split with a non-zero ratio gets at least one image of each class when it can.
    if n >= 3:
        n_test = max(n_test, 1) if ratios["test"] > 0 else 0
        n_val = max(n_val, 1) if ratios["val"] > 0 else 0
    return {"train": n - n_test - n_val, "val": n_val, "test": n_test}


def stratified_split(labels: np.ndarray, ratios: dict[str, float], seed: int) -> np.ndarray:
    """Assign each index a split name, class by class, so every split keeps the class mix."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=object)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        rng.shuffle(idx)
        sizes = split_sizes(len(idx), ratios)
        n_train, n_val = sizes["train"], sizes["val"]
        assignment[idx[:n_train]] = "train"
        assignment[idx[n_train : n_train + n_val]] = "val"
        assignment[idx[n_train + n_val :]] = "test"
    return assignment


@dataclass
class GroupedSplit:
    """Each index's split, and the groups too large to keep in one split (their indices)."""

    assignment: np.ndarray
    broken: list[np.ndarray] = field(default_factory=list)


def grouped_stratified_split(
    labels: np.ndarray,
    groups: np.ndarray,
    ratios: dict[str, float],
    seed: int,
    slack: float = 0.02,
) -> GroupedSplit:
    """Assign whole groups to splits so that every split keeps each class's share.

    Groups go largest first, each to the split furthest below its share of the group's classes
    among those with room for it (a class's share plus ``slack`` of its images); single images
    then fill every split to its share. A group no split has room for cannot be kept together:
    its images are split one by one like single images and the group is reported as broken.
    Ties and the order of equal-sized groups follow ``seed``, so the result is reproducible.
    scikit-learn's StratifiedGroupKFold makes folds, not splits of given ratios, hence this.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    target = {s: {} for s in SPLIT_NAMES}
    room = {s: {} for s in SPLIT_NAMES}
    for c in classes:
        n = int((labels == c).sum())
        for s, k in split_sizes(n, ratios).items():
            target[s][int(c)] = k
            room[s][int(c)] = k + int(np.ceil(slack * n)) if k else 0
    have = {s: dict.fromkeys(target[s], 0) for s in SPLIT_NAMES}
    assignment = np.empty(len(labels), dtype=object)

    def place(members: np.ndarray, need_room: bool) -> bool:
        counts = Counter(labels[members].tolist())
        best, best_score = None, -np.inf
        for s in SPLIT_NAMES:
            if any(target[s][c] == 0 for c in counts):
                continue
            if need_room and any(have[s][c] + k > room[s][c] for c, k in counts.items()):
                continue
            score = sum(k * (target[s][c] - have[s][c]) / target[s][c] for c, k in counts.items())
            if score > best_score:
                best, best_score = s, score
        if best is None:
            return False
        assignment[members] = best
        for c, k in counts.items():
            have[best][c] += k
        return True

    order = rng.permutation(len(labels))  # a seeded order for equal sizes and single images
    ids, first, sizes = np.unique(groups[order], return_index=True, return_counts=True)
    members_of = np.split(order[np.argsort(groups[order], kind="stable")], np.cumsum(sizes)[:-1])
    result = GroupedSplit(assignment)
    singles: list[int] = []  # positions in ``order`` of the images placed one by one
    position = np.empty(len(labels), dtype=np.int64)
    position[order] = np.arange(len(labels))
    for g in sorted(range(len(ids)), key=lambda g: (-sizes[g], first[g])):
        members = members_of[g]
        if len(members) == 1:
            singles.append(int(position[members[0]]))
            continue
        if not place(members, need_room=True):
            result.broken.append(np.sort(members))
            singles += position[members].tolist()
    for p in sorted(singles):
        place(order[p : p + 1], need_room=False)
    return result


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
