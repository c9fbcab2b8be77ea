"""Classification metrics from logits: accuracy, F1, loss, per-class scores, confusion matrix."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import classification_report, confusion_matrix, f1_score


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for z=1.96); sound at small n and near 0/1."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return (max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale))


def bootstrap_f1_interval(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the weighted F1 (resampling test images)."""
    n = len(y_true)
    if n == 0:
        return (0.0, 1.0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (resamples, n))
    cells = (y_true * n_classes + y_pred)[idx] + (np.arange(resamples) * n_classes**2)[:, None]
    cm = np.bincount(cells.ravel(), minlength=resamples * n_classes**2).reshape(
        resamples, n_classes, n_classes
    )
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(float)
    support, predicted = cm.sum(axis=2), cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    weighted = (f1 * support).sum(axis=1) / n
    low, high = np.percentile(weighted, [2.5, 97.5])
    return (float(low), float(high))


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, classes: list[str]
) -> dict[str, Any]:
    """Everything test.json records, computed from raw logits and true labels."""
    y_true = labels.numpy()
    y_pred = logits.argmax(1).numpy()
    label_ids = list(range(len(classes)))
    report = classification_report(
        y_true, y_pred, labels=label_ids, target_names=classes, output_dict=True, zero_division=0
    )
    return {
        "n": len(y_true),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        # How far to trust it: a 121-image test set reads as what it is.
        "accuracy_ci95": list(wilson_interval(int((y_true == y_pred).sum()), len(y_true))),
        "f1_weighted": float(
            f1_score(y_true, y_pred, labels=label_ids, average="weighted", zero_division=0)
        ),
        "f1_weighted_ci95": list(bootstrap_f1_interval(y_true, y_pred, len(classes))),
        "f1_macro": float(
            f1_score(y_true, y_pred, labels=label_ids, average="macro", zero_division=0)
        ),
        "loss": float(F.cross_entropy(logits, labels).item()),
        "per_class": {
            name: {
                "precision": float(report[name]["precision"]),
                "recall": float(report[name]["recall"]),
                "f1": float(report[name]["f1-score"]),
                "support": int(report[name]["support"]),
            }
            for name in classes
        },
        "classes": classes,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=label_ids).tolist(),
    }


def confusion_records(
    labels: np.ndarray, predictions: np.ndarray, classes: list[str]
) -> list[dict[str, str]]:
    """Per-sample records for ``dvc plots``' confusion template."""
    return [
        {"actual": classes[t], "predicted": classes[p]}
        for t, p in zip(labels, predictions, strict=True)
    ]


def text_report(metrics: dict[str, Any]) -> str:
    """A plain-text classification report, like scikit-learn's, for humans and MLflow."""
    lines = [f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"{name:<16}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}{row['support']:>10d}"
        )
    lines.append("")
    lines.append(
        f"accuracy {metrics['accuracy']:.4f}   f1_weighted {metrics['f1_weighted']:.4f}   "
        f"loss {metrics['loss']:.4f}   n {metrics['n']}"
    )
    return "\n".join(lines) + "\n"
