"""Classification metrics from logits (scikit-learn): accuracy, F1, loss, per-class scores,
the confusion matrix and the text report, each with its 95% interval where one applies."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import metrics

from trackvision.evaluation.confidence import bootstrap_f1_interval, wilson_interval


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, classes: list[str]
) -> dict[str, Any]:
    """Everything evaluation.json records, computed from raw logits and true labels."""
    y_true = labels.numpy()
    y_pred = logits.argmax(1).numpy()
    ids = list(range(len(classes)))
    # A class never predicted or never present scores 0, not a warning.
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0
    )
    n, correct = len(y_true), int((y_true == y_pred).sum())
    return {
        "n": n,
        "accuracy": correct / n,
        # How far to trust it: a 121-image test set reads as what it is.
        "accuracy_ci95": list(wilson_interval(correct, n)),
        "f1_weighted": float(
            metrics.f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)
        ),
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
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


def confusion_records(
    labels: np.ndarray, predictions: np.ndarray, classes: list[str]
) -> list[dict[str, str]]:
    """Per-sample records for ``dvc plots``' confusion template."""
    return [
        {"actual": classes[t], "predicted": classes[p]}
        for t, p in zip(labels, predictions, strict=True)
    ]


def text_report(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], scores: dict[str, Any]
) -> str:
    """scikit-learn's classification report, and the test loss, for humans and MLflow."""
    report = metrics.classification_report(
        y_true,
        y_pred,
        labels=list(range(len(classes))),
        target_names=classes,
        digits=4,
        zero_division=0,
    )
    return f"{report}\nloss {scores['loss']:.4f}   n {scores['n']}\n"
