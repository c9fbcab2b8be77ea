"""evaluate: score one trained model on the held-out test split."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import torch

from trackvision import atomic, doctor
from trackvision.config import Config
from trackvision.data.packed import read_classes, read_split
from trackvision.errors import DataError
from trackvision.layout import Layout
from trackvision.models.inference import pick_device, predict_logits, to_nchw
from trackvision.tracking import NullTracker, TrackerFactory, closing_run, open_tracker
from trackvision.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


def _balance_doctor(layout: Layout) -> dict[str, Any]:
    """The balance stage's findings (in metrics/balance.json), part of every model's report."""
    path = layout.balance_report
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("doctor", {})


def evaluate(
    config: Config, layout: Layout, model_name: str, tracker_factory: TrackerFactory = open_tracker
) -> dict[str, Any]:
    """Score one trained model on the test split; add the results to its training run."""
    # Imported here: scikit-learn and matplotlib cost seconds that the other stages need not pay.
    from trackvision.evaluation.footprint import footprint
    from trackvision.evaluation.metrics import (
        classification_metrics,
        confusion_records,
        text_report,
    )
    from trackvision.evaluation.plots import confusion_png, curves_png, errors_png

    model_dir = layout.model_dir(model_name)
    model, card, preprocess = load_checkpoint(model_dir)
    test = read_split(layout.balanced, "test")
    classes = read_classes(layout.balanced)
    if classes != card.classes:
        raise DataError(
            f"{model_dir}: trained on classes {card.classes}, but the data has {classes}; "
            "retrain (dvc repro)"
        )
    device = pick_device(config.train.device)
    labels = torch.from_numpy(np.asarray(test.labels))
    logits = predict_logits(
        model.to(device), to_nchw(test.images), preprocess, config.evaluate.batch_size, device
    )
    metrics = classification_metrics(logits, labels, classes)
    metrics["model"] = model_name
    # What it costs on a small device: the question the thesis asked of MobileViT.
    example = preprocess(to_nchw(test.images[:1]))
    metrics.update(
        footprint(model, model_dir / "model.safetensors", example, config.evaluate.latency_repeats)
    )
    history = json.loads((model_dir / "history.json").read_text(encoding="utf-8"))

    confidence, predicted = logits.softmax(dim=1).max(dim=1)
    y_true, y_pred = labels.numpy(), predicted.numpy()
    findings = [
        *doctor.from_json(_balance_doctor(layout)),
        *doctor.read(model_dir / "doctor.json"),
        *doctor.check_below_chance(y_true, y_pred),
        *doctor.check_collapse(y_true, y_pred, classes),
        *doctor.check_too_good(int((y_true == y_pred).sum()), len(y_pred)),
    ]
    metrics["doctor_status"] = doctor.status(findings)

    out = layout.metrics_dir(model_name)
    doctor.write(findings, out / "doctor.json")
    atomic.write_json(out / "test.json", metrics)
    atomic.write_json(out / "confusion.json", confusion_records(y_true, y_pred, classes))
    atomic.write_text(out / "report.txt", text_report(metrics))
    with atomic.atomic_path(out / "confusion.png") as tmp:
        confusion_png(
            metrics["confusion_matrix"],
            classes,
            tmp,
            f"{model_name}\ntest accuracy {metrics['accuracy']:.3f} (n={metrics['n']})",
        )
    with atomic.atomic_path(out / "curves.png") as tmp:
        curves_png(history, tmp, model_name)
    with atomic.atomic_path(out / "errors.png") as tmp:  # what a person looks at first
        errors_png(
            np.asarray(test.images),
            y_true,
            y_pred,
            confidence.numpy(),
            classes,
            tmp,
            model_name,
        )

    run_id = json.loads((model_dir / "train.json").read_text(encoding="utf-8")).get("mlflow_run_id")
    tracker = (
        tracker_factory(config, model_name, card.family, run_id=run_id) if run_id else NullTracker()
    )
    with closing_run(tracker):
        tracker.log_metrics(
            {
                **{
                    f"test_{k}": metrics[k] for k in ("accuracy", "f1_weighted", "f1_macro", "loss")
                },
                **{k: metrics[k] for k in ("model_size_mb", "cpu_latency_ms")},
                # Error bars beside the numbers, so the UI shows what n=121 means.
                "test_accuracy_ci95_low": metrics["accuracy_ci95"][0],
                "test_accuracy_ci95_high": metrics["accuracy_ci95"][1],
                "test_f1_weighted_ci95_low": metrics["f1_weighted_ci95"][0],
                "test_f1_weighted_ci95_high": metrics["f1_weighted_ci95"][1],
                "test_n": metrics["n"],
            }
        )
        for name in (
            "test.json",
            "report.txt",
            "confusion.png",
            "curves.png",
            "errors.png",
            "confusion.json",
            "doctor.json",
        ):
            tracker.log_artifact(out / name, "evaluation")
        tracker.set_tags(doctor.mlflow_tags(findings))
        if config.mlflow.log_model and config.mlflow.registered_model:
            tracker.register_model(
                config.mlflow.registered_model.format(source=config.data.source),
                {
                    "test_accuracy": f"{metrics['accuracy']:.6f}",
                    "n_test": str(metrics["n"]),
                    "model_name": model_name,
                    "data_source": config.data.source,
                },
                rank_by="test_accuracy",
            )
    doctor.report(f"evaluate {model_name}", findings)
    doctor.enforce(findings, config.doctor.strict, f"evaluate {model_name}", out / "doctor.json")
    log.info(
        "evaluate %s: accuracy %.4f  f1_weighted %.4f  (n=%d)",
        model_name,
        metrics["accuracy"],
        metrics["f1_weighted"],
        metrics["n"],
    )
    return metrics
