"""Decode, de-duplicate, split (stratified) and balance a folder of images by class.

Order matters for leakage: exact duplicates are removed *before* splitting, so one picture can never
sit in two splits; oversampling repeats images *after* splitting and only inside the training split.
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

from trackvision.data.images import IMAGE_SUFFIXES, ImageDecodeError, load_image
from trackvision.data.packed import SPLITS, Split
from trackvision.errors import DataError

STRATEGIES = ("undersample", "oversample", "none")


@dataclass
class BalancedSet:
    """Everything the balance stage writes: packed splits, manifest rows and a report."""

    classes: list[str]
    splits: dict[str, Split]
    manifest: list[dict[str, str]]
    report: dict = field(default_factory=dict)


def scan_class_folders(raw_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes are the sub-folders of ``raw_dir`` (sorted); files are taken in sorted order."""
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: no such folder; run the download stage first")
    classes = sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{raw_dir}: need at least 2 class folders, found {classes or 'none'}")
    files = [
        (p, label)
        for label, name in enumerate(classes)
        for p in sorted((raw_dir / name).rglob("*"))
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return classes, files


Decoded = tuple[str, "np.ndarray | None", str]  # (sha256 of the file, pixels or None, error)


def _decode_one(job: tuple[Path, int, int]) -> Decoded:
    path, channels, size = job
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        return digest, load_image(path, channels, size, data), ""
    except ImageDecodeError as exc:
        return digest, None, str(exc.__cause__ or exc)


def decode_files(
    paths: list[Path], channels: int, size: int, workers: int = 0
) -> Iterator[Decoded]:
    """Hash and decode every file, in order, on ``workers`` processes (0 = every usable core).

    Worker processes are spawned, so a script that calls this must guard its entry point with
    ``if __name__ == "__main__":`` (the ``trackvision`` command does).
    """
    workers = workers or len(os.sched_getaffinity(0))
    jobs = [(p, channels, size) for p in paths]
    if workers == 1 or len(jobs) < 256:  # a pool costs more than it saves on a few files
        yield from map(_decode_one, jobs)
        return
    # spawn, not fork: the parent may hold torch's thread pools, which do not survive a fork.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_decode_one, jobs, chunksize=64)


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
) -> BalancedSet:
    """Decode every image once, drop corrupt files and duplicates, split and balance.

    With ``presplit`` the raw folder holds ``train/`` and ``test/``: the official test split is kept
    as given (ratios.test is ignored) and validation is carved from train alone.
    """
    if strategy not in STRATEGIES:
        raise DataError(f"balance.strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if presplit:
        classes, train_files = scan_class_folders(raw_dir / "train")
        test_classes, test_files = scan_class_folders(raw_dir / "test")
        if test_classes != classes:
            raise DataError(f"{raw_dir}: train/ has classes {classes}, test/ has {test_classes}")
        files = test_files + train_files  # test first: of two identical images, test keeps its own
        given_test = [True] * len(test_files) + [False] * len(train_files)
    else:
        classes, files = scan_class_folders(raw_dir)
        given_test = [False] * len(files)
    images, labels, hashes, paths, in_test = [], [], [], [], []
    skipped, duplicates = [], []
    seen: dict[str, Path] = {}
    decoded = decode_files([p for p, _ in files], channels, image_size, workers)
    for (path, label), fixed_test, (digest, arr, error) in zip(
        files, given_test, tqdm(decoded, total=len(files), desc="decode", unit="img"), strict=True
    ):
        if digest in seen:
            duplicates.append(
                {"path": _rel(path, relative_to), "same_as": _rel(seen[digest], relative_to)}
            )
            continue
        if arr is None:
            skipped.append({"path": _rel(path, relative_to), "reason": error})
            continue
        seen[digest] = path
        images.append(arr)
        labels.append(label)
        hashes.append(digest)
        paths.append(_rel(path, relative_to))
        in_test.append(fixed_test)

    labels_arr = np.asarray(labels, dtype=np.int64)
    before = Counter(int(v) for v in labels_arr)
    too_small = {
        name: before.get(c, 0) for c, name in enumerate(classes) if before.get(c, 0) < min_per_class
    }
    if too_small:
        raise DataError(
            f"{raw_dir}: class(es) below data.min_per_class={min_per_class} after dropping "
            f"{len(skipped)} unreadable file(s) and {len(duplicates)} duplicate(s): {too_small}"
        )

    if presplit:
        fixed = np.asarray(in_test, dtype=bool)
        kept = ratios["train"] + ratios["val"]
        carve = {"train": ratios["train"] / kept, "val": ratios["val"] / kept, "test": 0.0}
        assignment = np.full(len(labels_arr), "test", dtype=object)
        assignment[~fixed] = stratified_split(labels_arr[~fixed], carve, seed)
    else:
        assignment = stratified_split(labels_arr, ratios, seed)
    rng = np.random.default_rng(seed + 1)
    stacked = np.stack(images)
    splits, manifest = {}, []
    for name in SPLITS:
        # Repeating images in val/test would only inflate the evaluation: oversample train alone.
        split_strategy = "none" if strategy == "oversample" and name != "train" else strategy
        idx = rebalance(np.flatnonzero(assignment == name), labels_arr, split_strategy, rng)
        splits[name] = Split(stacked[idx], labels_arr[idx])
        manifest += [
            {"path": paths[i], "label": classes[labels_arr[i]], "split": name, "sha256": hashes[i]}
            for i in idx
        ]

    report = {
        "classes": classes,
        "strategy": strategy,
        "files_found": len(files),
        "before": {classes[c]: before.get(c, 0) for c in range(len(classes))},
        "after": {
            name: {classes[c]: int((s.labels == c).sum()) for c in range(len(classes))}
            for name, s in splits.items()
        },
        "skipped_unreadable": len(skipped),
        "duplicates_removed": len(duplicates),
        "skipped": skipped,
        "duplicates": duplicates,
    }
    return BalancedSet(classes, splits, manifest, report)


def _rel(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            pass
    return path.as_posix()
