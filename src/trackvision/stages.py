"""The pipeline's stages as plain functions: Config and Layout in, files declared in dvc.yaml out.

The CLI (and so DVC) calls these; tests call them directly. Every output is written to a temporary
path and renamed into place, so an interrupted stage leaves the previous outputs intact.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trackvision import atomic
from trackvision.config import Config
from trackvision.data.augment import augment_split
from trackvision.data.balance import build_balanced_set
from trackvision.data.packed import read_classes, read_split, write_classes, write_split
from trackvision.data.sources import get_source
from trackvision.errors import DataError
from trackvision.layout import Layout
from trackvision.models.inference import pick_device, predict_logits, to_nchw
from trackvision.models.preprocessing import resolve_preprocessing
from trackvision.models.zoo import create_model, model_family
from trackvision.tracking import (
    MlflowTracker,
    NullTracker,
    Tracker,
    closing_run,
    flatten,
    resolve_tracking_uri,
    run_context_tags,
)
from trackvision.training.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from trackvision.training.loop import fit

log = logging.getLogger(__name__)

TrackerFactory = Callable[..., Tracker]


def open_tracker(config: Config, model: str, run_id: str | None = None) -> Tracker:
    """The MLflow run of ``model`` (new, or reopened by id), or a no-op when tracking is off."""
    if not config.mlflow.enabled:
        return NullTracker()
    exp_name = os.environ.get("DVC_EXP_NAME")
    tags = {
        **run_context_tags(),
        "data_source": config.data.source,
        "model_name": model,
        "model_family": model_family(model),
    }
    return MlflowTracker(
        tracking_uri=resolve_tracking_uri(config.mlflow.tracking_uri),
        experiment=config.data.source,
        run_name=f"{model} @ {exp_name}" if exp_name else f"{model} @ workspace",
        run_id=run_id,
        tags=tags,
    )


def download(config: Config, layout: Layout) -> dict[str, Any]:
    """Fetch (or generate) the configured source into ``data/raw/<source>/<class>/``."""
    source = get_source(config.data.source)
    target = layout.raw(source.name)
    with atomic.atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        summary = source.fetch(tmp, config.data.options)
        summary = {"source": source.name, "options": config.data.options.__dict__, **summary}
        (tmp / "source.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log.info("download: %s -> %s (%s images)", source.name, target, summary.get("images"))
    return summary


def balance(config: Config, layout: Layout) -> dict[str, Any]:
    """Decode, de-duplicate, split and balance into packed arrays plus a manifest."""
    result = build_balanced_set(
        layout.raw(config.data.source),
        channels=config.data.channels,
        image_size=config.data.image_size,
        ratios=config.balance.split,
        strategy=config.balance.strategy,
        seed=config.balance.seed,
        min_per_class=config.data.min_per_class,
        relative_to=layout.root,
    )
    with atomic.atomic_path(layout.balanced) as tmp:
        for name, split in result.splits.items():
            write_split(tmp, name, split)
        write_classes(tmp, result.classes)
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=["path", "label", "split", "sha256"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(result.manifest)
        (tmp / "manifest.csv").write_text(buffer.getvalue(), encoding="utf-8")
    atomic.write_json(layout.balance_report, result.report)
    log.info("balance: %s", {k: sum(v.values()) for k, v in result.report["after"].items()})
    if result.report["skipped_unreadable"]:
        log.warning(
            "balance: skipped %d unreadable file(s); see %s",
            result.report["skipped_unreadable"],
            layout.balance_report,
        )
    return result.report


def augment(config: Config, layout: Layout) -> dict[str, Any]:
    """Add seeded augmented copies of the training split (validation and test stay untouched)."""
    train = read_split(layout.balanced, "train")
    augmented = augment_split(train, config.augment)
    with atomic.atomic_path(layout.augmented) as tmp:
        write_split(tmp, "train", augmented)
    summary = {"original": len(train), "augmented": len(augmented)}
    log.info("augment: %s", summary)
    return summary


def _manifest_sha256(layout: Layout) -> str:
    path = layout.balanced / "manifest.csv"
    if not path.is_file():
        raise DataError(f"{path}: missing; run the balance stage first")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(
    config: Config, layout: Layout, model_name: str, tracker_factory: TrackerFactory = open_tracker
) -> dict[str, Any]:
    """Train one model on the augmented train split, keep the best epoch by validation accuracy."""
    spec = config.model(model_name)
    classes = read_classes(layout.balanced)
    train_split = read_split(layout.augmented, "train")
    val_split = read_split(layout.balanced, "val")
    channels = int(train_split.images.shape[-1])
    device = pick_device(spec.train.device)
    torch.manual_seed(spec.train.seed)  # the initial weights are part of what the seed fixes
    model = create_model(
        model_name,
        num_classes=len(classes),
        in_chans=channels,
        image_size=spec.train.image_size,
        pretrained=spec.pretrained,
        arch=spec.arch,
    )
    family = model_family(model_name)
    preprocess = resolve_preprocessing(model, family, channels, spec.train.image_size)
    n_params = sum(p.numel() for p in model.parameters())

    with closing_run(tracker_factory(config, model_name)) as tracker:
        tracker.log_params(
            {
                **flatten(
                    {
                        "data": config.raw["data"],
                        "balance": config.raw["balance"],
                        "augment": config.raw["augment"],
                    }
                ),
                **flatten(spec.train.__dict__, "train."),
                **flatten(
                    {
                        "name": model_name,
                        "family": family,
                        "pretrained": spec.pretrained,
                        **spec.arch,
                    },
                    "model.",
                ),
                **flatten({k: str(v) for k, v in preprocess.to_dict().items()}, "preprocessing."),
                "data.manifest_sha256": _manifest_sha256(layout),
                "data.classes": ",".join(classes),
                "data.n_train": len(train_split),
                "data.n_val": len(val_split),
                "model.n_params": n_params,
                "device": str(device),
            }
        )
        result = fit(model, train_split, val_split, spec.train, preprocess, device, tracker)
        model.load_state_dict(result.best_state)
        card = ModelCard(
            model_name, family, spec.arch, classes, channels, spec.train.image_size, spec.pretrained
        )
        summary = {
            "model": model_name,
            "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
            "train_seconds": round(result.seconds, 2),
            "n_params": n_params,
            "mlflow_run_id": tracker.run_id,
        }
        with atomic.atomic_path(layout.model_dir(model_name)) as tmp:
            save_checkpoint(tmp, result.best_state, card, preprocess)
            (tmp / "history.json").write_text(
                json.dumps(result.history, indent=2) + "\n", encoding="utf-8"
            )
            (tmp / "train.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        _write_history_csv(layout.metrics_dir(model_name) / "history.csv", result.history)
        tracker.log_metrics(
            {
                "best_val_accuracy": result.best_val_accuracy,
                "best_epoch": result.best_epoch,
                "train_seconds": result.seconds,
            }
        )
        tracker.log_artifact(layout.model_dir(model_name) / "preprocessing.json")
        if config.mlflow.log_model:
            example = preprocess(to_nchw(val_split.images[:2])).numpy()
            tracker.log_model(model.cpu(), example)
    log.info(
        "train %s: best val accuracy %.4f at epoch %d",
        model_name,
        result.best_val_accuracy,
        result.best_epoch,
    )
    return summary


def _write_history_csv(path: Path, history: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic.write_text(path, buffer.getvalue())


def evaluate(
    config: Config, layout: Layout, model_name: str, tracker_factory: TrackerFactory = open_tracker
) -> dict[str, Any]:
    """Score one trained model on the test split; add the results to its training run."""
    # Imported here: scikit-learn and matplotlib cost seconds that the other stages need not pay.
    from trackvision.evaluation.metrics import (
        classification_metrics,
        confusion_records,
        text_report,
    )
    from trackvision.evaluation.plots import confusion_png, curves_png

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
    history = json.loads((model_dir / "history.json").read_text(encoding="utf-8"))

    out = layout.metrics_dir(model_name)
    atomic.write_json(out / "test.json", metrics)
    atomic.write_json(
        out / "confusion.json", confusion_records(labels.numpy(), logits.argmax(1).numpy(), classes)
    )
    atomic.write_text(out / "report.txt", text_report(metrics))
    with atomic.atomic_path(out / "confusion.png") as tmp:
        confusion_png(
            metrics["confusion_matrix"],
            classes,
            tmp,
            f"{model_name}: test accuracy {metrics['accuracy']:.3f} (n={metrics['n']})",
        )
    with atomic.atomic_path(out / "curves.png") as tmp:
        curves_png(history, tmp, model_name)

    run_id = json.loads((model_dir / "train.json").read_text(encoding="utf-8")).get("mlflow_run_id")
    tracker = tracker_factory(config, model_name, run_id=run_id) if run_id else NullTracker()
    with closing_run(tracker):
        tracker.log_metrics(
            {f"test_{k}": metrics[k] for k in ("accuracy", "f1_weighted", "f1_macro", "loss")}
        )
        for name in ("test.json", "report.txt", "confusion.png", "curves.png", "confusion.json"):
            tracker.log_artifact(out / name, "evaluation")
    log.info(
        "evaluate %s: accuracy %.4f  f1_weighted %.4f  (n=%d)",
        model_name,
        metrics["accuracy"],
        metrics["f1_weighted"],
        metrics["n"],
    )
    return metrics


def compare(config: Config, layout: Layout) -> str:
    """A table of every model's test metrics, best first: ``reports/compare.md`` and ``.json``."""
    rows = []
    for name in config.models:
        path = layout.metrics_dir(name) / "test.json"
        if not path.is_file():
            raise DataError(f"{path}: missing; run the evaluate stage for {name}")
        m = json.loads(path.read_text(encoding="utf-8"))
        train_info = json.loads((layout.model_dir(name) / "train.json").read_text(encoding="utf-8"))
        rows.append(
            {
                "model": name,
                "accuracy": m["accuracy"],
                "f1_weighted": m["f1_weighted"],
                "loss": m["loss"],
                "n_test": m["n"],
                "n_params": train_info["n_params"],
                "best_epoch": train_info["best_epoch"],
                "train_seconds": train_info["train_seconds"],
            }
        )
    rows.sort(key=lambda r: -r["accuracy"])
    lines = [
        f"# Test-set comparison ({config.data.source})",
        "",
        "| model | accuracy | F1 (weighted) | loss | test images | parameters | best epoch "
        "| train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['accuracy']:.4f} | {r['f1_weighted']:.4f} | {r['loss']:.4f} | "
        f"{r['n_test']} | {r['n_params']:,} | {r['best_epoch']} | {r['train_seconds']:.1f} |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    atomic.write_text(layout.reports / "compare.md", text)
    atomic.write_json(layout.reports / "compare.json", rows)
    log.info("compare:\n%s", text)
    return text
