"""The training loop: epochs over in-memory batches, early stopping, a history of metrics.

It knows tensors, a model, an optimizer and a ``Tracker``: not DVC, not MLflow, not YAML.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from trackvision.allocator import tune_allocator
from trackvision.config import TrainSettings
from trackvision.data.augment import random_flip_shift
from trackvision.data.packed import Split
from trackvision.errors import TrainingError
from trackvision.models.inference import predict_logits, to_nchw
from trackvision.models.preprocessing import Preprocessing
from trackvision.tracking import NullTracker, Tracker
from trackvision.training.attention import cpu_fast_attention
from trackvision.training.checkpoint import ResumeFile
from trackvision.training.distributed import World, check_supported
from trackvision.training.dropout import cpu_fast_dropout
from trackvision.training.finetune import backbone_frozen, set_phase
from trackvision.training.optim import build_optimizer, build_scheduler
from trackvision.training.precision import autocast_dtype, resolve_precision

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What training produced: per-epoch history and the best weights by validation accuracy."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val_accuracy: float
    best_state: dict[str, torch.Tensor] = field(repr=False)
    stopped_early: bool
    seconds: float


def evaluate_split(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    preprocess: Preprocessing,
    batch_size: int,
    device: torch.device,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on a split, in eval mode."""
    logits = predict_logits(model, images, preprocess, batch_size, device)
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    settings: TrainSettings,
    preprocess: Preprocessing,
    device: torch.device,
    tracker: Tracker | None = None,
    resume: ResumeFile | None = None,
    world: World | None = None,
) -> FitResult:
    """Train ``model`` in place; returns the history and the best state (by val accuracy).

    With ``resume``, the full training state is saved after every epoch, and a run that finds a
    matching state there continues from it, ending exactly where an uninterrupted run would.
    Under torchrun (``world``), each rank trains on its share of every batch of the same global
    order, and only rank 0 saves the state.
    """
    tracker = tracker or NullTracker()
    world = world or World()
    tune_allocator()  # freed activations stay in the heap: no page faults every step
    check_supported(world, settings.finetune)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)  # the global batch order
    # One process draws its augmentations from the order generator (as it always has); ranks
    # each need their own stream, since their shares of a batch may differ in size.
    augment_rng = (
        torch.Generator().manual_seed(settings.seed * 1000 + world.rank)
        if world.distributed
        else generator
    )
    model.to(device)
    precision = resolve_precision(settings.precision, device)
    amp_dtype = autocast_dtype(precision)
    tracker.log_params({"train.precision_used": precision})  # what `auto` became here
    channels_last = settings.channels_last
    if channels_last:  # oneDNN's fast convolution kernels want NHWC (fp32 and bf16 alike)
        model.to(memory_format=torch.channels_last)

    x_train, y_train = to_nchw(train.images), torch.from_numpy(np.asarray(train.labels))
    x_val, y_val = to_nchw(val.images), torch.from_numpy(np.asarray(val.labels))
    steps_per_epoch = math.ceil(len(y_train) / settings.batch_size)
    optimizer = build_optimizer(model, settings)
    scheduler = build_scheduler(optimizer, settings, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    history: list[dict[str, float]] = []
    best_acc, best_loss, best_epoch, stale, stopped_early = -1.0, math.inf, 0, 0, False
    best_state = copy.deepcopy(model.state_dict())
    done_seconds, first_epoch = 0.0, 1
    saved = resume.load() if resume else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        generator.set_state(saved["rng"]["generator"])
        torch.set_rng_state(saved["rng"]["torch"])
        if device.type == "cuda" and "cuda" in saved["rng"]:
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        history, best_state = saved["history"], saved["best_state"]
        best_acc, best_loss, best_epoch, stale = saved["best"]
        stopped_early, done_seconds = saved["stopped_early"], saved["seconds"]
        first_epoch = saved["epoch"] + 1
        log.info("resuming from the state saved after epoch %d (%s)", saved["epoch"], resume.path)
    last_epoch = first_epoch - 1 if stopped_early else settings.epochs
    if world.distributed:  # DDP fixes the trained parameters when it wraps the model
        set_phase(model, backbone_frozen(settings.finetune, first_epoch, settings.head_epochs))
    net = world.wrap(model, device)

    start = time.perf_counter()
    # Dropout's CPU kernel was a quarter of a ViT step, and undoing attention's head split
    # 7%; the swapped modules are restored before the model leaves.
    with cpu_fast_dropout(model), cpu_fast_attention(model):
        for epoch in range(first_epoch, last_epoch + 1):
            set_phase(model, backbone_frozen(settings.finetune, epoch, settings.head_epochs))
            trainable = [p for p in model.parameters() if p.requires_grad]
            order = torch.randperm(len(y_train), generator=generator)
            seen, loss_sum, correct, t0 = 0, 0.0, 0, time.perf_counter()
            bar = tqdm(
                range(steps_per_epoch),
                desc=f"epoch {epoch}/{settings.epochs}",
                unit="batch",
                leave=False,
                disable=not world.is_main,
            )
            for step in bar:
                batch = order[step * settings.batch_size : (step + 1) * settings.batch_size]
                if len(batch) < world.size:  # a last batch too small to give every rank a row
                    continue
                idx = world.shard(batch)
                x = preprocess(x_train[idx].to(device))
                x = random_flip_shift(x, augment_rng, settings.shift, flip=settings.hflip)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = y_train[idx].to(device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=settings.label_smoothing)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"loss is {loss.item()} at epoch {epoch}, step {step + 1}: lower the "
                        "learning rate or check the inputs"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if settings.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                seen += len(y)
                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                # Drawn with the bar at its own interval: a forced redraw each step cost 20 us.
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", refresh=False)
            train_seconds = time.perf_counter() - t0
            seen, loss_sum, correct = world.sum([seen, loss_sum, correct])
            world.sync_buffers(model)
            val_loss, val_acc = evaluate_split(model, x_val, y_val, preprocess, 256, device)
            row = {
                "epoch": epoch,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": optimizer.param_groups[0]["lr"],
                "images_per_s": seen / train_seconds,
            }
            history.append(row)
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            log.info(
                "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.0f img/s",
                epoch,
                settings.epochs,
                row["train_loss"],
                row["train_accuracy"],
                val_loss,
                val_acc,
                row["images_per_s"],
            )
            if val_acc > best_acc or (val_acc == best_acc and val_loss < best_loss):
                best_acc, best_loss, best_epoch, stale = val_acc, val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                stopped_early = bool(settings.patience and stale >= settings.patience)
            if resume and world.is_main:
                resume.save(
                    {
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": _rng_state(generator, device),
                        "history": history,
                        "best_state": best_state,
                        "best": [best_acc, best_loss, best_epoch, stale],
                        "stopped_early": stopped_early,
                        "seconds": done_seconds + time.perf_counter() - start,
                        "run_id": tracker.run_id or "",
                    }
                )
            if stopped_early:
                log.info("early stop: no val accuracy gain for %d epochs", stale)
                break
    model.to(memory_format=torch.contiguous_format)
    for p in model.parameters():
        p.requires_grad_(True)
    return FitResult(
        history,
        best_epoch,
        best_acc,
        best_state,
        stopped_early,
        done_seconds + time.perf_counter() - start,
    )


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state
