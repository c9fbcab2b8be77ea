"""Metrics from logits match hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trackvision.evaluation.metrics import classification_metrics, confusion_records


def test_metrics_on_a_known_confusion() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    preds = torch.tensor([0, 0, 1, 1, 1, 1, 0, 0])
    logits = torch.nn.functional.one_hot(preds, 2).float() * 4
    m = classification_metrics(logits, labels, ["no_text", "text"])
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["confusion_matrix"] == [[2, 1], [2, 3]]
    assert m["per_class"]["text"]["precision"] == pytest.approx(3 / 4)
    assert m["per_class"]["text"]["recall"] == pytest.approx(3 / 5)
    f1_text, f1_no = 2 * 0.75 * 0.6 / 1.35, 2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3)
    assert m["f1_weighted"] == pytest.approx((5 * f1_text + 3 * f1_no) / 8)


def test_confusion_records_for_dvc_plots() -> None:
    recs = confusion_records(np.array([0, 1]), np.array([1, 1]), ["a", "b"])
    assert recs == [{"actual": "a", "predicted": "b"}, {"actual": "b", "predicted": "b"}]
