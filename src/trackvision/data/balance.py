"""Decode, de-duplicate, split (stratified) and balance a folder of images by class.

Order matters for leakage: exact duplicates are removed *before* splitting, so one picture can never
sit in two splits; near-copies (``data/similarity.py``) are grouped before splitting and each group
goes to one split; oversampling repeats images *after* splitting and only inside the training split.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from trackvision.data.images import ImageDecodeError, load_image
from trackvision.data.packed import SPLITS, Split
from trackvision.data.rawset import RawItem, read_raw
from trackvision.data.similarity import Rule, describe, near_copy_groups
from trackvision.data.splits import grouped_stratified_split, stratified_split
from trackvision.errors import DataError

STRATEGIES = ("undersample", "oversample", "none")


@dataclass
class BalancedSet:
    """Everything the balance stage writes: packed splits, manifest rows and a report."""

    classes: list[str]
    splits: dict[str, Split]
    manifest: list[dict[str, str]]
    report: dict = field(default_factory=dict)
    groups: dict[str, np.ndarray] | None = None  # per split, each image's near-copy group


Decoded = tuple[str, "np.ndarray | None", str]  # (sha256 of the bytes, pixels or None, reason)


def _decode_one(job: tuple[RawItem, int, int]) -> Decoded:
    item, channels, size = job
    try:
        data = item.read()
    except OSError as exc:
        return "", None, f"cannot be read ({exc.strerror or exc})"
    digest = hashlib.sha256(data).hexdigest()
    if item.sha256 and digest != item.sha256:
        raise DataError(
            f"{item.shown_as}: changed since the download stage listed it (sha256 "
            f"{item.sha256[:12]}... now {digest[:12]}...); run `dvc repro` so every stage sees "
            "the same file"
        )
    try:
        return digest, load_image(Path(item.shown_as), channels, size, data), ""
    except ImageDecodeError as exc:
        return digest, None, exc.reason


def decode_items(
    items: list[RawItem], channels: int, size: int, workers: int = 0
) -> Iterator[Decoded]:
    """Hash and decode every item, in order, on ``workers`` processes (0 = every usable core).

    Worker processes are spawned, so a script that calls this must guard its entry point with
    ``if __name__ == "__main__":`` (the ``trackvision`` command does).
    """
    workers = workers or len(os.sched_getaffinity(0))
    jobs = [(item, channels, size) for item in items]
    if workers == 1 or len(jobs) < 256:  # a pool costs more than it saves on a few files
        yield from map(_decode_one, jobs)
        return
    # spawn, not fork: the parent may hold torch's thread pools, which do not survive a fork.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_decode_one, jobs, chunksize=64)


def rebalance(
    indices: np.ndarray, labels: np.ndarray, strategy: str, rng: np.random.Generator
) -> np.ndarray:
    """One split's indices, balanced: cut to the rarest class or repeat up to the commonest."""
    if strategy == "none" or len(indices) == 0:
        return indices
    by_class = {c: indices[labels[indices] == c] for c in np.unique(labels[indices])}
    counts = [len(v) for v in by_class.values()]
    out = []
    for members in by_class.values():
        if strategy == "undersample":
            out.append(np.sort(rng.choice(members, min(counts), replace=False)))
        else:  # oversample: keep all, add random repeats
            extra = rng.choice(members, max(counts) - len(members), replace=True)
            out.append(np.concatenate([members, np.sort(extra)]))
    return np.concatenate(out)


def build_balanced_set(
    raw_dir: Path,
    *,
    channels: int,
    image_size: int,
    ratios: dict[str, float],
    strategy: str,
    seed: int,
    min_per_class: int,
    relative_to: Path | None = None,
    presplit: bool = False,
    workers: int = 0,
    near_copies: Rule | None = None,
) -> BalancedSet:
    """Decode every image once, drop unreadable files and duplicates, split and balance.

    With ``presplit`` the raw data carries an official test split: it is kept as given
    (ratios.test is ignored) and validation is carved from train alone. The same picture under two
    classes is a label conflict: every copy of it is left out, and the report names them.
    With ``near_copies``, images that rule calls copies of each other (directly or through a
    chain) form a group, and each group goes to one split whole (``grouped_stratified_split``).
    """
    if strategy not in STRATEGIES:
        raise DataError(f"balance.strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    classes, items = read_raw(raw_dir, relative_to, presplit)
    if presplit:
        if any(i.split not in ("train", "test") for i in items):
            raise DataError(f"{raw_dir}: expected train/ and test/ splits for this source")
        items = sorted(items, key=lambda i: i.split != "test")  # test first: it keeps its own
    elif len(classes) < 2:
        raise DataError(f"{raw_dir}: need at least 2 classes, found {classes or 'none'}")
    kept = _decode_and_dedupe(items, classes, channels, image_size, workers)

    labels_arr = kept.labels
    before = Counter(int(v) for v in labels_arr)
    too_small = {
        name: before.get(c, 0) for c, name in enumerate(classes) if before.get(c, 0) < min_per_class
    }
    if too_small:
        raise DataError(
            f"{raw_dir}: class(es) below data.min_per_class={min_per_class} after dropping "
            f"{len(kept.skipped)} unreadable file(s), {len(kept.duplicates)} duplicate(s) and "
            f"{len(kept.conflicts)} label conflict(s): {too_small}"
        )

    fixed = kept.given_test if presplit else np.zeros(len(labels_arr), dtype=bool)
    if presplit:
        share = ratios["train"] + ratios["val"]
        ratios = {"train": ratios["train"] / share, "val": ratios["val"] / share, "test": 0.0}
    assignment = np.full(len(labels_arr), "test", dtype=object)
    grouping: dict = {}
    groups = None
    if near_copies is None:
        assignment[~fixed] = stratified_split(labels_arr[~fixed], ratios, seed)
    else:
        groups = near_copy_groups(describe(kept.images), near_copies)
        assignment[~fixed], grouping = _split_groups(
            groups, fixed, labels_arr, ratios, seed, classes, kept.paths
        )
    rng = np.random.default_rng(seed + 1)
    splits, manifest, split_groups = {}, [], {}
    for name in SPLITS:
        # Repeating images in val/test would only inflate the evaluation: oversample train alone.
        split_strategy = "none" if strategy == "oversample" and name != "train" else strategy
        idx = rebalance(np.flatnonzero(assignment == name), labels_arr, split_strategy, rng)
        splits[name] = Split(kept.images[idx], labels_arr[idx])
        if groups is not None:
            split_groups[name] = groups[idx]
        manifest += [
            {
                "path": kept.paths[i],
                "label": classes[labels_arr[i]],
                "split": name,
                "sha256": kept.hashes[i],
            }
            for i in idx
        ]

    report = {
        "classes": classes,
        "strategy": strategy,
        "files_found": len(items),
        "before": {classes[c]: before.get(c, 0) for c in range(len(classes))},
        "after": {
            name: {classes[c]: int((s.labels == c).sum()) for c in range(len(classes))}
            for name, s in splits.items()
        },
        "skipped_unreadable": len(kept.skipped),
        "duplicates_removed": len(kept.duplicates),
        "label_conflicts": len(kept.conflicts),
        "skipped": kept.skipped,
        "duplicates": kept.duplicates,
        "conflicts": kept.conflicts,
    }
    if grouping:
        report["near_copy_groups"] = grouping
    return BalancedSet(classes, splits, manifest, report, split_groups or None)


def _split_groups(
    groups: np.ndarray,
    fixed: np.ndarray,
    labels: np.ndarray,
    ratios: dict[str, float],
    seed: int,
    classes: list[str],
    paths: list[str],
    limit: int = 5,
) -> tuple[np.ndarray, dict]:
    """The split of every image not in a given test split, whole groups at a time, and a report.

    A group with an image in a given test split cannot follow it there (that split is the
    source's own), so its other images are split one by one and the group counts as broken.
    """
    free = np.flatnonzero(~fixed)
    touching = np.isin(groups[free], groups[fixed])
    free_groups = groups[free].copy()
    free_groups[touching] = groups.max() + 1 + np.arange(int(touching.sum()))
    result = grouped_stratified_split(labels[free], free_groups, ratios, seed)
    broken = [free[b] for b in result.broken] + _by_group(free[touching], groups)
    members = np.unique(np.stack([groups, labels]), axis=1)  # (group, label) pairs, once each
    ids, labels_per_group = np.unique(members[0], return_counts=True)
    mixed = ids[labels_per_group > 1]

    def describe_group(idx: np.ndarray) -> dict:
        names = [classes[c] for c in labels[idx]]
        return {"size": len(idx), "classes": dict(Counter(names)), "example": paths[idx[0]]}

    sizes = np.bincount(groups)
    return result.assignment, {
        "groups": int((sizes > 1).sum()),
        "images_in_groups": int(sizes[sizes > 1].sum()),
        "largest": int(sizes.max(initial=0)),
        "broken": len(broken),
        "broken_images": int(sum(len(b) for b in broken)),
        "broken_examples": [describe_group(b) for b in broken[:limit]],
        "broken_classes": sorted({classes[c] for b in broken for c in labels[b]}),
        "mixed_label_groups": len(mixed),
        "mixed_label_examples": [
            describe_group(m)
            for m in _by_group(np.flatnonzero(np.isin(groups, mixed[:limit])), groups)
        ],
    }


def _by_group(indices: np.ndarray, groups: np.ndarray) -> list[np.ndarray]:
    """``indices`` cut into one sorted array per group id, groups in increasing id."""
    indices = np.sort(indices)
    order = np.argsort(groups[indices], kind="stable")
    _, counts = np.unique(groups[indices], return_counts=True)
    return np.split(indices[order], np.cumsum(counts)[:-1]) if len(indices) else []


@dataclass
class _Kept:
    """The decoded images that survive, in input order, and what was left out and why."""

    images: np.ndarray
    labels: np.ndarray
    hashes: list[str]
    paths: list[str]
    given_test: np.ndarray
    skipped: list[dict[str, str]]
    duplicates: list[dict[str, str]]
    conflicts: list[dict[str, object]]


def _decode_and_dedupe(
    items: list[RawItem], classes: list[str], channels: int, size: int, workers: int
) -> _Kept:
    """Decode into one preallocated array (memory: the pixels once), dropping what cannot stay."""
    label_of = {name: i for i, name in enumerate(classes)}
    images = np.empty((len(items), size, size, channels), dtype=np.uint8)
    rows: list[int] = []  # index into items of each kept image, in the order of ``images``
    digests: list[str] = []  # sha256 of each kept image
    first: dict[str, int] = {}  # sha256 -> position in rows of its first readable copy
    skipped, duplicates = [], []
    conflicted: dict[str, list[int]] = {}  # sha256 -> items that carry it under other classes
    decoded = decode_items(items, channels, size, workers)
    for k, (digest, arr, error) in enumerate(
        tqdm(decoded, total=len(items), desc="decode", unit="img", disable=None)
    ):
        item = items[k]
        if arr is None:
            skipped.append({"path": item.shown_as, "reason": error})
            continue
        if digest in first:
            original = items[rows[first[digest]]]
            if original.label == item.label:
                duplicates.append({"path": item.shown_as, "same_as": original.shown_as})
            else:
                conflicted.setdefault(digest, []).append(k)
            continue
        first[digest] = len(rows)
        images[len(rows)] = arr
        rows.append(k)
        digests.append(digest)
    drop = {first[d] for d in conflicted}
    conflicts = [
        {
            "paths": [items[rows[first[d]]].shown_as, *(items[k].shown_as for k in others)],
            "labels": [items[rows[first[d]]].label, *(items[k].label for k in others)],
        }
        for d, others in conflicted.items()
    ]
    keep = [p for p in range(len(rows)) if p not in drop]
    chosen = [items[rows[p]] for p in keep]
    decoded_images = images[: len(rows)]  # a view: no copy unless conflicts are taken out
    return _Kept(
        images=decoded_images[keep] if drop else decoded_images,
        labels=np.asarray([label_of[i.label] for i in chosen], dtype=np.int64),
        hashes=[digests[p] for p in keep],
        paths=[i.shown_as for i in chosen],
        given_test=np.asarray([i.split == "test" for i in chosen], dtype=bool),
        skipped=skipped,
        duplicates=duplicates,
        conflicts=conflicts,
    )
