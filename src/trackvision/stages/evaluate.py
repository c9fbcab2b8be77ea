"""evaluate: score one trained model on the held-out test split."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trackvision import atomic, doctor
from trackvision.config import Config, TrainSettings
from trackvision.data.packed import Split, read_classes, read_split
from trackvision.errors import DataError
from trackvision.evaluation.footprint import footprint, latency
from trackvision.layout import Layout
from trackvision.models.inference import pick_device, predict_logits, to_nchw
from trackvision.models.preprocessing import Preprocessing
from trackvision.tracking import Tracker, TrackerFactory, closing_run, open_tracker
from trackvision.training.checkpoint import ModelCard, load_checkpoint, weights_sha256

log = logging.getLogger(__name__)


def _balance_doctor(layout: Layout) -> dict[str, Any]:
    """The balance stage's findings (in metrics/balance.json), part of every model's report."""
    path = layout.balance_report
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("doctor", {})


def headline(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """test.json, the DVC metric: what `dvc exp show` compares experiments by. Only the
    accuracy, under the model's name so that its column reads ``cnn.accuracy``: a terminal then
    shows every model's beside the params that changed. Its interval, F1 and loss are in
    evaluation.json and MLflow."""
    return {metrics["model"]: {"accuracy": metrics["accuracy"]}}


def evaluate(
    config: Config, layout: Layout, model_name: str, tracker_factory: TrackerFactory = open_tracker
) -> dict[str, Any]:
    """Score one trained model on the test split; add the results to its training run."""
    model_dir = layout.model_dir(model_name)
    model, card, preprocess = load_checkpoint(model_dir)
    test = read_split(layout.balanced, "test")
    classes = read_classes(layout.balanced)
    if classes != card.classes:
        raise DataError(
            f"{model_dir}: trained on classes {card.classes}, but the data has {classes}; "
            "retrain (dvc repro)"
        )
    settings = config.model(model_name).train
    device = pick_device(settings.device)
    labels = torch.from_numpy(np.asarray(test.labels))
    logits = _test_logits(model.to(device), test, preprocess, config, settings, device)
    trained = json.loads((model_dir / "train.json").read_text(encoding="utf-8"))
    metrics = _score(model_name, classes, model, model_dir, logits, labels)
    metrics["best_epoch"] = trained["best_epoch"]  # for compare, which reads metrics/ only
    timing = latency(model, preprocess(to_nchw(test.images[:1])), config.evaluate.latency_repeats)
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
    _write_evaluation(out, model_dir, metrics, findings, test.images, y_true, y_pred, confidence)
    atomic.write_json(layout.timing_record(model_name), timing)
    tracker = tracker_factory(
        config, model_name, card.family, weights_sha256=weights_sha256(model_dir)
    )
    with closing_run(tracker):
        if tracker.restored:  # trained elsewhere: this store gets the model to register
            _record_restored(config, tracker, model_dir, model, card, preprocess, test)
        scores = {**metrics, **timing}
        _record(config, tracker, out, model_name, scores, findings, _candidate(model_dir, trained))
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


def _test_logits(
    model: torch.nn.Module,
    test: Split,
    preprocess: Preprocessing,
    config: Config,
    settings: TrainSettings,
    device: torch.device,
) -> torch.Tensor:
    """fp32 logits of the test split, in the memory format the model trained in (oneDNN's fast
    convolutions want NHWC); the model is left as it was loaded."""
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        return predict_logits(
            model,
            to_nchw(test.images),
            preprocess,
            config.evaluate.batch_size,
            device,
            channels_last=settings.channels_last,
        )
    finally:
        model.to(memory_format=torch.contiguous_format)


def _score(
    model_name: str,
    classes: list[str],
    model: torch.nn.Module,
    model_dir: Path,
    logits: torch.Tensor,
    labels: torch.Tensor,
) -> dict[str, Any]:
    """Every test figure and what the model is (parameters, file size: the thesis's question of
    a small device); nothing that varies run to run."""
    # Imported here: these cost seconds that the other stages need not pay.
    from trackvision.evaluation.metrics import classification_metrics

    metrics = classification_metrics(logits, labels, classes)
    metrics["model"] = model_name
    metrics.update(footprint(model, model_dir / "model.safetensors"))
    return metrics


def _write_evaluation(
    out: Path,
    model_dir: Path,
    metrics: dict[str, Any],
    findings: list[doctor.Finding],
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    confidence: torch.Tensor,
) -> None:
    """metrics/<model>/: the headline (test.json), the details, the plots and the report."""
    from trackvision.evaluation.metrics import confusion_records, text_report
    from trackvision.evaluation.plots import confusion_png, curves_png, errors_png

    name, classes = metrics["model"], metrics["classes"]
    doctor.write(findings, out / "doctor.json")
    atomic.write_json(out / "test.json", headline(metrics))
    atomic.write_json(out / "evaluation.json", metrics)
    atomic.write_json(out / "confusion.json", confusion_records(y_true, y_pred, classes))
    atomic.write_text(out / "report.txt", text_report(y_true, y_pred, classes, metrics))
    with atomic.atomic_path(out / "confusion.png") as tmp:
        title = f"{name}\ntest accuracy {metrics['accuracy']:.3f} (n={metrics['n']})"
        confusion_png(metrics["confusion_matrix"], classes, tmp, title)
    history = json.loads((model_dir / "history.json").read_text(encoding="utf-8"))
    with atomic.atomic_path(out / "curves.png") as tmp:
        curves_png(history, tmp, name)
    with atomic.atomic_path(out / "errors.png") as tmp:  # what a person looks at first
        errors_png(np.asarray(images), y_true, y_pred, confidence.numpy(), classes, tmp, name)


def _record_restored(
    config: Config,
    tracker: Tracker,
    model_dir: Path,
    model: torch.nn.Module,
    card: ModelCard,
    preprocess: Preprocessing,
    test: Split,
) -> None:
    """A new run for a model this store never saw train: what it is, and the model itself."""

    tracker.log_params(
        {
            "model.name": card.name,
            "model.family": card.family,
            "model.pretrained": card.pretrained,
            "model.image_size": card.image_size,
        }
    )
    if config.mlflow.log_model:
        tracker.log_model(model_dir, np.asarray(test.images[:2]))


def _record(
    config: Config,
    tracker: Tracker,
    out: Path,
    model_name: str,
    metrics: dict[str, Any],
    findings: list[doctor.Finding],
    candidate: bool,
) -> None:
    """The scores beside the training in the model's run; a new registry version."""
    tracker.log_metrics(
        {
            **{f"test_{k}": metrics[k] for k in ("accuracy", "f1_weighted", "f1_macro", "loss")},
            **{k: metrics[k] for k in ("model_size_mb", "cpu_latency_ms")},
            # Error bars beside the numbers, so the UI shows what a small test set means.
            "test_accuracy_ci95_low": metrics["accuracy_ci95"][0],
            "test_accuracy_ci95_high": metrics["accuracy_ci95"][1],
            "test_f1_weighted_ci95_low": metrics["f1_weighted_ci95"][0],
            "test_f1_weighted_ci95_high": metrics["f1_weighted_ci95"][1],
            "test_n": metrics["n"],
        }
    )
    for name in EVALUATION_ARTIFACTS:
        tracker.log_artifact(out / name, "evaluation")
    tracker.set_tags(doctor.mlflow_tags(findings))
    if config.mlflow.log_model and config.mlflow.registered_model and candidate:
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


def _candidate(model_dir: Path, trained: dict[str, Any]) -> bool:
    """A model a search's pruner cut short (``pruned_at_epoch`` in its train.json) is a record
    of the search, never a registry version (nor so the champion): its params would not give it."""
    if "pruned_at_epoch" in trained:
        log.info("%s: a pruned trial's model, not registered", model_dir)
        return False
    return True


EVALUATION_ARTIFACTS = (
    "test.json",
    "evaluation.json",
    "report.txt",
    "confusion.png",
    "curves.png",
    "errors.png",
    "confusion.json",
    "doctor.json",
)
