"""Sort a photo gallery with a trained model: a CSV of predictions, copies sorted by class.

The thesis's use case: find the photos with text among thousands, on a personal machine. Images
are decoded exactly as training decoded them (``data/images.py``, at the model's decode size) in
a worker process while the model computes on the previous batch; the model brings its own
preprocessing. A user's photos are only ever read and copied, never moved or deleted.
"""

from __future__ import annotations

import csv
import filecmp
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from trackvision import atomic
from trackvision.data.images import IMAGE_SUFFIXES, ImageDecodeError, load_image
from trackvision.errors import DataError
from trackvision.models.packaged import PackagedClassifier, load_packaged

log = logging.getLogger(__name__)

UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class Prediction:
    path: Path
    label: str  # "" when the file could not be read
    confidence: float
    probabilities: tuple[float, ...]
    error: str = ""


def find_images(inputs: Sequence[Path]) -> list[Path]:
    """Image files under folders (recursively, sorted) and files named directly, in order."""
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found += sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif item.is_file():
            found.append(item)  # named explicitly: tried even with an odd suffix
        else:
            raise DataError(f"{item}: no such file or folder")
    return found


class _Decoded(Dataset):
    """Files decoded to uint8 C x H x W at the model's decode size; failures carried as text."""

    def __init__(self, paths: Sequence[Path], channels: int, size: int) -> None:
        self.paths, self.channels, self.size = list(paths), channels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str]:
        try:
            image = load_image(self.paths[i], self.channels, self.size)
        except ImageDecodeError as exc:
            return i, None, str(exc)
        return i, np.ascontiguousarray(image.transpose(2, 0, 1)), ""


def _as_list(batch: list) -> list:
    return batch


@torch.no_grad()
def predict(
    classifier: PackagedClassifier,
    paths: Sequence[Path],
    batch_size: int = 64,
    workers: int = 1,
) -> Iterator[Prediction]:
    """Predictions for ``paths``, in order; unreadable files come back with ``error`` set."""
    classifier.eval()
    dataset = _Decoded(paths, classifier.channels, classifier.decode_size)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_as_list,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )
    for batch in tqdm(loader, desc="predict", unit="batch", total=len(loader), disable=None):
        readable = [(i, image) for i, image, _ in batch if image is not None]
        probs = (
            classifier(torch.from_numpy(np.stack([image for _, image in readable]))).numpy()
            if readable
            else np.empty((0, len(classifier.classes)))
        )
        by_index = {i: p for (i, _), p in zip(readable, probs, strict=True)}
        for i, _image, error in batch:
            if error:
                yield Prediction(paths[i], "", 0.0, (), error)
                continue
            p = by_index[i]
            k = int(p.argmax())
            yield Prediction(paths[i], classifier.classes[k], float(p[k]), tuple(map(float, p)))


def write_csv(predictions: Sequence[Prediction], classes: Sequence[str], out: Path) -> None:
    """path, label, confidence, p_<class>..., error — written atomically."""
    header = ["path", "label", "confidence", *(f"p_{c}" for c in classes), "error"]
    with atomic.atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for p in predictions:
            probs = [f"{v:.6f}" for v in p.probabilities] or [""] * len(classes)
            conf = f"{p.confidence:.6f}" if not p.error else ""
            writer.writerow([str(p.path), p.label, conf, *probs, p.error])


def _free_name(folder: Path, source: Path) -> Path | None:
    """Where to copy ``source`` in ``folder``: its name, or ``stem_1.ext``... if another file has
    it (never overwrite); None if an identical copy is there already (a rerun copies nothing)."""
    target = folder / source.name
    n = 1
    while target.exists():
        if filecmp.cmp(source, target, shallow=False):
            return None
        target = folder / f"{source.stem}_{n}{source.suffix}"
        n += 1
    return target


def sort_into(predictions: Sequence[Prediction], dest: Path, threshold: float) -> dict[str, int]:
    """Copy each readable image into ``dest/<label>/`` (``dest/uncertain/`` below
    ``threshold``); returns the count per folder. Originals are never touched."""
    counts: dict[str, int] = {}
    for p in predictions:
        if p.error:
            continue
        folder = dest / (p.label if p.confidence >= threshold else UNCERTAIN)
        folder.mkdir(parents=True, exist_ok=True)
        target = _free_name(folder, p.path)
        if target is not None:
            tmp = target.with_name(f".{target.name}.partial")
            shutil.copy2(p.path, tmp)  # a copy interrupted half-way never looks like a photo
            tmp.rename(target)
        counts[folder.name] = counts.get(folder.name, 0) + 1
    return counts


def best_local_model(root: Path) -> Path:
    """``models/<name>/`` of the model with the best test accuracy in
    ``metrics/*/evaluation.json``."""
    scored = []
    for evaluation in sorted((root / "metrics").glob("*/evaluation.json")):
        model_dir = root / "models" / evaluation.parent.name
        if (model_dir / "model.json").is_file():
            accuracy = json.loads(evaluation.read_text(encoding="utf-8")).get("accuracy", -1.0)
            scored.append((accuracy, model_dir))
    if not scored:
        raise DataError(
            f"{root / 'models'}: no evaluated model; run `dvc repro`, or pass "
            "--model models/<name>/ or --model models:/<name>@champion"
        )
    return max(scored, key=lambda item: item[0])[1]


def predict_gallery(
    inputs: Sequence[Path],
    model_ref: str | None,
    out: Path,
    sort_dest: Path | None = None,
    threshold: float = 0.7,
    batch_size: int = 64,
    workers: int = 1,
    tracking_uri: str = "",
) -> dict[str, object]:
    """``trackvision predict``: classify, write the CSV, optionally copy into class folders.

    ``model_ref`` None: the local model with the best test accuracy (``best_local_model``);
    ``tracking_uri``: where a ``models:/`` reference is looked up (see ``load_packaged``)."""
    if not 0.0 <= threshold <= 1.0:
        raise DataError(f"--threshold: expected a probability in [0, 1], got {threshold}")
    paths = find_images(inputs)
    if not paths:
        raise DataError(f"{', '.join(map(str, inputs))}: no image files found")
    model_ref = model_ref or str(best_local_model(Path.cwd()))
    classifier = load_packaged(model_ref, tracking_uri)
    log.info("predict: %d images with %s (classes %s)", len(paths), model_ref, classifier.classes)
    start = time.perf_counter()
    predictions = list(predict(classifier, paths, batch_size, workers))
    seconds = time.perf_counter() - start
    write_csv(predictions, classifier.classes, out)
    unreadable = [p for p in predictions if p.error]
    for p in unreadable:
        log.warning("unreadable, skipped: %s", p.error)
    summary: dict[str, object] = {
        "images": len(paths),
        "unreadable": len(unreadable),
        "seconds": round(seconds, 2),
        "images_per_s": round(len(paths) / seconds, 1) if seconds else None,
        "per_class": {c: sum(p.label == c for p in predictions) for c in classifier.classes},
        "csv": str(out),
    }
    if sort_dest is not None:
        summary["copied"] = sort_into(predictions, sort_dest, threshold)
    log.info("predict: %s", summary)
    return summary
