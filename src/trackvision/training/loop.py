"""The training loop: epochs over in-memory batches, early stopping, a history of metrics.

It knows tensors, a model, an optimizer and a ``Tracker``: not DVC, not MLflow, not YAML. The
history holds only what the params and data determine; how fast each epoch ran is kept apart
(``FitResult.images_per_s``), so the outputs written from the history are the same bytes on
every run.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
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
from trackvision.training.checkpoint import ResumeFile
from trackvision.training.distributed import World, check_supported
from trackvision.training.finetune import backbone_frozen, set_phase
from trackvision.training.precision import attention_for
from trackvision.training.state import TrainingState

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
    images_per_s: list[float]  # per epoch; wall-clock, so never part of an output's bytes
    pruned_at: int | None = None  # the epoch after which a search's pruner stopped the run


class Pruner(Protocol):
    """Told every epoch's metrics (a search's trial); says whether the run is worth going on
    with. After the ``last`` epoch there is nothing left to save, so it never stops that one."""

    def should_stop(self, epoch: int, row: dict[str, float], last: bool) -> bool: ...


@dataclass
class Batches:
    """The training split and how an epoch walks it.

    The images stay as they are stored (N x H x W x C uint8, memory-mapped): each batch is
    gathered and laid out N x C x H x W on its own, so training never holds a second copy of
    the whole split.
    """

    images: np.ndarray
    y: torch.Tensor
    batch_size: int

    @property
    def steps(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def images_at(self, idx: torch.Tensor) -> torch.Tensor:
        return to_nchw(self.images[idx.numpy()])


@dataclass
class EpochTotals:
    seen: int = 0
    loss_sum: float = 0.0
    correct: int = 0


def evaluate_split(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    preprocess: Preprocessing,
    settings: TrainSettings,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on a split, in eval mode, at the batch size,
    precision and memory format it trains with: validation is part of every epoch's cost."""
    logits = predict_logits(
        model,
        images,
        preprocess,
        settings.batch_size,
        device,
        amp_dtype=amp_dtype,
        channels_last=settings.channels_last,
    )
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
    pruner: Pruner | None = None,
) -> FitResult:
    """Train ``model`` in place; returns the history and the best state (by val accuracy).

    With ``resume``, the full training state is saved after every epoch, and a run that finds a
    matching state there continues from it, ending exactly where an uninterrupted run would.
    Under torchrun (``world``), each rank trains on its share of every batch of the same global
    order, and only rank 0 saves the state.
    """
    tracker = tracker or NullTracker()
    world = world or World()
    check_supported(world, settings.finetune)
    torch.manual_seed(settings.seed)
    model.to(device)
    if settings.channels_last:  # oneDNN's fast convolution kernels want NHWC
        model.to(memory_format=torch.channels_last)

    batches = Batches(train.images, torch.from_numpy(np.asarray(train.labels)), settings.batch_size)
    x_val, y_val = to_nchw(val.images), torch.from_numpy(np.asarray(val.labels))
    state = TrainingState.start(model, settings, batches.steps, device, world)
    tracker.log_params({"train.precision_used": state.precision})  # what `auto` became here
    state.restore(resume.load() if resume else None)
    if state.history:  # resumed: the store may lack the last saved epochs (a kill beat the queue)
        tracker.log_history(state.history)
    if world.distributed:  # DDP fixes the trained parameters when it wraps the model
        set_phase(model, backbone_frozen(settings.finetune, state.next_epoch, settings.head_epochs))
    net = world.wrap(model, device)

    start = time.perf_counter()
    pruned_at = None
    with attention_for(model, device, state.amp_dtype):
        for epoch in range(state.next_epoch, state.last_epoch(settings.epochs) + 1):
            t0 = time.perf_counter()
            totals = train_epoch(net, model, batches, state, settings, preprocess, epoch, world)
            images_per_s = totals.seen / (time.perf_counter() - t0)
            world.sync_buffers(model)
            val_loss, val_acc = evaluate_split(
                model, x_val, y_val, preprocess, settings, device, state.amp_dtype
            )
            row = {
                "epoch": epoch,
                "train_loss": totals.loss_sum / totals.seen,
                "train_accuracy": totals.correct / totals.seen,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": state.optimizer.param_groups[0]["lr"],
            }
            state.end_epoch(row, images_per_s)
            tracker.log_metrics(
                {**{k: v for k, v in row.items() if k != "epoch"}, "images_per_s": images_per_s},
                step=epoch,
            )
            _log_epoch(row, settings.epochs, images_per_s)
            if resume and world.is_main:
                resume.save(state.to_dict(time.perf_counter() - start, tracker.run_id or ""))
            if state.stopping.stopped:
                log.info("early stop: no val accuracy gain for %d epochs", state.stopping.stale)
                break
            if _pruned(pruner, epoch, row, world, last=epoch == settings.epochs):
                log.info("pruned after epoch %d: the search's other trials did better", epoch)
                pruned_at = epoch
                break
    model.to(memory_format=torch.contiguous_format)
    for p in model.parameters():
        p.requires_grad_(True)
    return FitResult(
        state.history,
        state.stopping.best_epoch,
        state.stopping.best_accuracy,
        state.best_weights,
        state.stopping.stopped,
        state.seconds + time.perf_counter() - start,
        state.images_per_s,
        pruned_at,
    )


def _pruned(
    pruner: Pruner | None, epoch: int, row: dict[str, float], world: World, last: bool
) -> bool:
    """Rank 0's pruner decides for every rank (only rank 0 has one)."""
    verdict = bool(pruner and world.is_main and pruner.should_stop(epoch, row, last))
    if not world.distributed:
        return verdict
    return world.sum([float(verdict)])[0] > 0


def train_epoch(
    net: nn.Module,
    model: nn.Module,
    batches: Batches,
    state: TrainingState,
    settings: TrainSettings,
    preprocess: Preprocessing,
    epoch: int,
    world: World,
) -> EpochTotals:
    """One pass over the training split in the state's batch order; totals summed over ranks."""
    set_phase(model, backbone_frozen(settings.finetune, epoch, settings.head_epochs))
    trainable = [p for p in model.parameters() if p.requires_grad]
    device = state.device
    amp_dtype = state.amp_dtype
    order = torch.randperm(len(batches.y), generator=state.generator)
    totals = EpochTotals()
    bar = tqdm(
        range(batches.steps),
        desc=f"epoch {epoch}/{settings.epochs}",
        unit="batch",
        leave=False,
        disable=None if world.is_main else True,  # None: a bar on a terminal only
    )
    for step in bar:
        batch = order[step * batches.batch_size : (step + 1) * batches.batch_size]
        if len(batch) < world.size:  # a last batch too small to give every rank a row
            continue
        idx = world.shard(batch)
        x = preprocess(batches.images_at(idx).to(device))
        x = random_flip_shift(x, state.augment_rng, settings.shift, flip=settings.hflip)
        if settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = batches.y[idx].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=settings.label_smoothing)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss is {loss.item()} at epoch {epoch}, step {step + 1}: lower the "
                "learning rate or check the inputs"
            )
        state.step(loss, trainable, settings.grad_clip)
        totals.seen += len(y)
        totals.loss_sum += loss.item() * len(y)
        totals.correct += (logits.argmax(1) == y).sum().item()
        # Drawn with the bar at its own interval: a forced redraw each step is not free.
        bar.set_postfix(loss=f"{totals.loss_sum / totals.seen:.4f}", refresh=False)
    seen, loss_sum, correct = world.sum([totals.seen, totals.loss_sum, totals.correct])
    return EpochTotals(int(seen), float(loss_sum), int(correct))


def _log_epoch(row: dict[str, float], epochs: int, images_per_s: float) -> None:
    log.info(
        "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.0f img/s",
        row["epoch"],
        epochs,
        row["train_loss"],
        row["train_accuracy"],
        row["val_loss"],
        row["val_accuracy"],
        images_per_s,
    )
