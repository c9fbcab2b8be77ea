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


@pytest.mark.parametrize("seed", range(5))
def test_scores_equal_scikit_learns_including_absent_and_never_predicted_classes(seed) -> None:
    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    rng = np.random.default_rng(seed)
    n_classes, n = 5, 60
    # Class 4 never occurs and class 3 is never predicted: the zero-division cases.
    labels = torch.from_numpy(rng.integers(0, 4, n))
    preds = rng.choice([0, 1, 2, 4], n)
    logits = torch.nn.functional.one_hot(torch.from_numpy(preds), n_classes).float()
    classes = [f"c{i}" for i in range(n_classes)]
    m = classification_metrics(logits, labels, classes)

    y, ids = labels.numpy(), list(range(n_classes))
    assert m["confusion_matrix"] == confusion_matrix(y, preds, labels=ids).tolist()
    for average in ("weighted", "macro"):
        expected = f1_score(y, preds, labels=ids, average=average, zero_division=0)
        assert m[f"f1_{average}"] == pytest.approx(expected, abs=1e-12)
    report = classification_report(
        y, preds, labels=ids, target_names=classes, output_dict=True, zero_division=0
    )
    for name in classes:
        row = m["per_class"][name]
        assert row["precision"] == pytest.approx(report[name]["precision"], abs=1e-12)
        assert row["recall"] == pytest.approx(report[name]["recall"], abs=1e-12)
        assert row["f1"] == pytest.approx(report[name]["f1-score"], abs=1e-12)
        assert row["support"] == report[name]["support"]
    assert m["per_class"]["c4"]["support"] == 0 and m["per_class"]["c3"]["precision"] == 0.0
