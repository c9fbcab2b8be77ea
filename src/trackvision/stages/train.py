"""train: one model on the augmented training split; its MLflow run; its checkpoint."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import numpy as np
import torch
import yaml

from trackvision import atomic, doctor
from trackvision.config import Config, ModelSpec
from trackvision.data.packed import Split, read_classes, read_split
from trackvision.data.splits import stratified_subset
from trackvision.errors import DataError
from trackvision.layout import Layout
from trackvision.models.inference import pick_device, to_nchw
from trackvision.models.preprocessing import Preprocessing, resolve_preprocessing
from trackvision.models.zoo import create_model, model_family
from trackvision.tracking import (
    NullTracker,
    Tracker,
    TrackerFactory,
    closing_run,
    flatten,
    open_tracker,
)
from trackvision.tracking.mlflow_adapter import WEIGHTS_TAG
from trackvision.tracking.store import run_context_tags
from trackvision.training.checkpoint import ModelCard, ResumeFile, save_checkpoint, weights_sha256
from trackvision.training.distributed import (
    World,
    current_world,
    init_world,
    leave_world,
    weights_digest,
)
from trackvision.training.loop import FitResult, fit
from trackvision.tuning.trial import pruner_from_env

log = logging.getLogger(__name__)


def _manifest_sha256(layout: Layout) -> str:
    path = layout.balanced / "manifest.csv"
    if not path.is_file():
        raise DataError(f"{path}: missing; run the balance stage first")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _data_version(config: Config, layout: Layout, manifest_sha256: str) -> tuple:
    """(name, digest, source) of the balanced data: DVC's hash of ``data/balanced`` as dvc.lock
    records it (the manifest's sha256 when there is no lock), its DVC path and git revision."""
    digest = f"manifest:{manifest_sha256[:16]}"
    lock = layout.root / "dvc.lock"
    if lock.is_file():
        outs = yaml.safe_load(lock.read_text(encoding="utf-8")).get("stages", {})
        for out in outs.get("balance", {}).get("outs", []):
            if out.get("path") == "data/balanced" and out.get("md5"):
                digest = out["md5"].removesuffix(".dir")
    source = {"dvc_path": "data/balanced", "git_revision": run_context_tags().get("git_commit", "")}
    return f"{config.data.source} (balanced)", digest, source


def _run_params(
    config: Config, spec: ModelSpec, family: str, preprocessing: dict[str, Any]
) -> dict[str, Any]:
    """Every parameter that shaped this model's run, flattened (``train.*`` as used for it)."""
    upstream = {k: config.raw[k] for k in ("data", "balance", "augment")}
    model = {"name": spec.name, "family": family, "pretrained": spec.pretrained, **spec.arch}
    return {
        **flatten(upstream),
        **flatten(spec.train.__dict__, "train."),
        **flatten(model, "model."),
        **flatten({k: str(v) for k, v in preprocessing.items()}, "preprocessing."),
    }


def _training_subset(layout: Layout, spec: ModelSpec) -> Split:
    """The augmented training split, cut to ``train.subset`` of the original images.

    The augmented split is the originals followed by their copies in the same order, so keeping
    original ``i`` keeps rows ``i, i + n, i + 2n, ...``: a subset never sees copies of images
    it left out.
    """
    augmented = read_split(layout.augmented, "train")
    if spec.train.subset >= 1.0:
        return augmented
    originals = read_split(layout.balanced, "train")
    n = len(originals)
    keep = stratified_subset(np.asarray(originals.labels), spec.train.subset, spec.train.seed)
    rows = np.concatenate([keep + k * n for k in range(len(augmented) // n)])
    return Split(np.asarray(augmented.images[rows]), np.asarray(augmented.labels[rows]))


def _fit_findings(
    model: torch.nn.Module,
    spec: ModelSpec,
    preprocess: Preprocessing,
    history: list[dict[str, float]],
    train_split: Split,
    val_split: Split,
) -> list[doctor.Finding]:
    """Too good to trust, memorisation, and inputs the (pretrained) model does not expect."""
    expected = None
    if spec.pretrained != "none":
        cfg = getattr(model, "pretrained_cfg", None) or {}
        expected = {k: cfg[k] for k in ("mean", "std") if k in cfg}
    batch = preprocess(to_nchw(train_split.images[:64])).numpy()
    return [
        *doctor.check_fit(history, len(val_split), len(train_split)),
        *doctor.check_preprocessing(preprocess.to_dict(), expected),
        *doctor.check_batch_range(batch, preprocess.mean, preprocess.std),
    ]


def _fingerprint(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def train(
    config: Config, layout: Layout, model_name: str, tracker_factory: TrackerFactory = open_tracker
) -> dict[str, Any]:
    """Train one model on the augmented train split, keep the best epoch by validation accuracy.

    The training state is saved after every epoch; rerunning a killed or interrupted stage
    with the same params and data resumes it, in the same MLflow run. Under ``torchrun`` the
    ranks train data-parallel; rank 0 alone tracks and writes the outputs.
    """
    world = current_world()
    init_world(world, pick_device(config.model(model_name).train.device))
    try:
        return _train(config, layout, model_name, tracker_factory, world)
    finally:
        leave_world(world)


def _train(
    config: Config,
    layout: Layout,
    model_name: str,
    tracker_factory: TrackerFactory,
    world: World,
) -> dict[str, Any]:
    spec = config.model(model_name)
    classes = read_classes(layout.balanced)
    train_split = _training_subset(layout, spec)
    val_split = read_split(layout.balanced, "val")
    channels = int(train_split.images.shape[-1])
    device = world.device(pick_device(spec.train.device))
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
    card = ModelCard(
        model_name,
        family,
        spec.arch,
        classes,
        channels,
        spec.train.image_size,
        spec.pretrained,
        decode_size=int(val_split.images.shape[1]),  # as balance decoded them
    )
    params = {
        **_run_params(config, spec, family, preprocess.to_dict()),
        "data.manifest_sha256": _manifest_sha256(layout),
    }
    resume = ResumeFile(layout.resume_state(model_name, _fingerprint(params)), _fingerprint(params))
    run_id = (resume.load() or {}).get("run_id") or None  # a resumed run continues its MLflow run
    tracker = (
        tracker_factory(config, model_name, family, run_id=run_id, system_metrics=True)
        if world.is_main
        else None
    )
    with closing_run(tracker or NullTracker()) as run:
        run.log_params(
            {
                **params,
                "data.classes": ",".join(classes),
                "data.n_train": len(train_split),
                "data.n_val": len(val_split),
                "model.n_params": sum(p.numel() for p in model.parameters()),
                "device": str(device),
                "torch.threads": torch.get_num_threads(),
            }
        )
        run.log_dataset(*_data_version(config, layout, params["data.manifest_sha256"]))
        pruner = pruner_from_env() if world.is_main else None  # set when a search runs this
        if pruner:
            run.set_tags(pruner.link.mlflow_tags)
        result = fit(
            model,
            train_split,
            val_split,
            spec.train,
            preprocess,
            device,
            run,
            resume,
            world,
            pruner,
        )
        if world.distributed:  # DDP keeps ranks in step: the digests show it
            log.info(
                "rank %d/%d: final weights sha256 %s", world.rank, world.size, weights_digest(model)
            )
        model.load_state_dict(result.best_state)
        if not world.is_main:
            return {"model": model_name, "rank": world.rank}
        findings = _fit_findings(model, spec, preprocess, result.history, train_split, val_split)
        summary = _write_model(layout, model, card, preprocess, result, findings)
        _record(config, layout, run, model, card, preprocess, result, findings, val_split)
    doctor.report(f"train {model_name}", findings)
    resume.clear()  # the outputs are written: nothing left to resume
    where = layout.model_dir(model_name) / "doctor.json"
    doctor.enforce(findings, config.doctor.strict, f"train {model_name}", where)
    log.info(
        "train %s: best val accuracy %.4f at epoch %d",
        model_name,
        result.best_val_accuracy,
        result.best_epoch,
    )
    return summary


def _write_model(
    layout: Layout,
    model: torch.nn.Module,
    card: ModelCard,
    preprocess: Preprocessing,
    result: FitResult,
    findings: list[doctor.Finding],
) -> dict[str, Any]:
    """models/<model>/: only what the params, the data and the code determine, so a faithful
    reproduction writes the same bytes."""
    summary = {
        "model": card.name,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    if result.pruned_at is not None:  # a search's trial, cut short: not what its params give
        summary["pruned_at_epoch"] = result.pruned_at
    with atomic.atomic_path(layout.model_dir(card.name)) as tmp:
        save_checkpoint(tmp, result.best_state, card, preprocess)
        atomic.write_json(tmp / "history.json", result.history)
        atomic.write_json(tmp / "train.json", summary)
        doctor.write(findings, tmp / "doctor.json")
    atomic.write_csv(
        layout.metrics_dir(card.name) / "history.csv", result.history, list(result.history[0])
    )
    return summary


def _record(
    config: Config,
    layout: Layout,
    run: Tracker,
    model: torch.nn.Module,
    card: ModelCard,
    preprocess: Preprocessing,
    result: FitResult,
    findings: list[doctor.Finding],
    val_split: Split,
) -> None:
    """What varies run to run goes to MLflow and runs/<model>/train.json, never to models/."""
    model_dir = layout.model_dir(card.name)
    digest = weights_sha256(model_dir)
    atomic.write_json(
        layout.run_record(card.name),
        {
            "train_seconds": round(result.seconds, 2),
            "images_per_s": [round(x, 1) for x in result.images_per_s],
            "mlflow_run_id": run.run_id,
            WEIGHTS_TAG: digest,
        },
    )
    run.log_metrics(
        {
            "best_val_accuracy": result.best_val_accuracy,
            "best_epoch": result.best_epoch,
            "train_seconds": result.seconds,
        }
    )
    run.set_tags({WEIGHTS_TAG: digest, **doctor.mlflow_tags(findings)})
    if result.pruned_at is not None:
        run.set_tags({"tune.pruned": "true", "tune.pruned_at_epoch": str(result.pruned_at)})
    run.log_artifact(model_dir / "preprocessing.json")
    if config.mlflow.log_model:
        run.log_model(model_dir, np.asarray(val_split.images[:2]))
