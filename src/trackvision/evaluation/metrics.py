"""Classification metrics from logits: accuracy, F1, loss, per-class scores, confusion matrix.

Every score comes from one confusion matrix in numpy, with scikit-learn's conventions (a class
never predicted or never present scores 0, weighted F1 weights by support); the tests hold them
equal to scikit-learn's. Importing scikit-learn (and scipy) cost every evaluate stage about 1 s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trackvision.evaluation.confidence import bootstrap_f1_interval, per_class_f1, wilson_interval


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    cells = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(cells, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros(num.shape), where=den > 0)


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, classes: list[str]
) -> dict[str, Any]:
    """Everything evaluation.json records, computed from raw logits and true labels."""
    y_true = labels.numpy()
    y_pred = logits.argmax(1).numpy()
    cm = confusion_matrix(y_true, y_pred, len(classes))
    tp = np.diagonal(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = per_class_f1(cm)
    n = len(y_true)
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        # How far to trust it: a 121-image test set reads as what it is.
        "accuracy_ci95": list(wilson_interval(int(tp.sum()), n)),
        "f1_weighted": float((f1 * support).sum() / n) if n else 0.0,
        "f1_weighted_ci95": list(bootstrap_f1_interval(y_true, y_pred, len(classes))),
        "f1_macro": float(f1.mean()),
        "loss": float(F.cross_entropy(logits, labels).item()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "classes": classes,
        "confusion_matrix": cm.tolist(),
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
