"""The training loop: epochs over in-memory batches, early stopping, a history of metrics.

It knows tensors, a model, an optimizer and a ``Tracker``: not DVC, not MLflow, not YAML.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from trackvision.config import TrainSettings
from trackvision.data.augment import random_flip_shift
from trackvision.data.packed import Split
from trackvision.errors import TrainingError
from trackvision.models.inference import predict_logits, to_nchw
from trackvision.models.preprocessing import Preprocessing
from trackvision.tracking import NullTracker, Tracker

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


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR multiplier: linear warm-up, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


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
) -> FitResult:
    """Train ``model`` in place; returns the history and the best state (by val accuracy)."""
    tracker = tracker or NullTracker()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model.to(device)
    bf16 = settings.precision == "bf16"
    if bf16:  # channels_last is what lets bf16 convolutions use the fast kernels
        model.to(memory_format=torch.channels_last)

    x_train, y_train = to_nchw(train.images), torch.from_numpy(train.labels)
    x_val, y_val = to_nchw(val.images), torch.from_numpy(val.labels)
    steps_per_epoch = math.ceil(len(y_train) / settings.batch_size)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        warmup_cosine(settings.epochs * steps_per_epoch, settings.warmup_epochs * steps_per_epoch),
    )

    history: list[dict[str, float]] = []
    best_acc, best_loss, best_epoch = -1.0, math.inf, 0
    best_state = copy.deepcopy(model.state_dict())
    stale, stopped_early, start = 0, False, time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        seen, loss_sum, correct, t0 = 0, 0.0, 0, time.perf_counter()
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch}/{settings.epochs}",
            unit="batch",
            leave=False,
        )
        for step in bar:
            idx = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            x = preprocess(x_train[idx].to(device))
            x = random_flip_shift(x, generator, settings.shift, flip=settings.hflip)
            if bf16:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y_train[idx].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=settings.label_smoothing)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss is {loss.item()} at epoch {epoch}, step {step + 1}: lower the learning "
                    "rate or check the inputs"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        train_seconds = time.perf_counter() - t0
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
            if settings.patience and stale >= settings.patience:
                log.info("early stop: no val accuracy gain for %d epochs", stale)
                stopped_early = True
                break
    model.to(memory_format=torch.contiguous_format)
    return FitResult(
        history, best_epoch, best_acc, best_state, stopped_early, time.perf_counter() - start
    )
