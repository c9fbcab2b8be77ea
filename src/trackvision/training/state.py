"""Everything a training run carries from one epoch to the next, and how it saves and loads itself.

A resumed run restores this state and ends with exactly the weights of a run that was never
interrupted, so every piece that moves (weights, optimizer, schedule, scaler, random streams,
history, early-stopping counters) lives here and nowhere else.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trackvision.config import TrainSettings
from trackvision.training.distributed import World
from trackvision.training.optim import build_optimizer, build_scheduler
from trackvision.training.precision import autocast_dtype, resolve_precision

log = logging.getLogger(__name__)


@dataclass
class EarlyStopping:
    """The best epoch so far by validation accuracy (lower loss breaks a tie) and the wait."""

    patience: int
    best_accuracy: float = -1.0
    best_loss: float = math.inf
    best_epoch: int = 0
    stale: int = 0
    stopped: bool = False

    def update(self, epoch: int, accuracy: float, loss: float) -> bool:
        """Record an epoch; True when it is the new best."""
        if accuracy > self.best_accuracy or (
            accuracy == self.best_accuracy and loss < self.best_loss
        ):
            self.best_accuracy, self.best_loss, self.best_epoch, self.stale = (
                accuracy,
                loss,
                epoch,
                0,
            )
            return True
        self.stale += 1
        self.stopped = bool(self.patience and self.stale >= self.patience)
        return False


@dataclass
class TrainingState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    generator: torch.Generator  # the global batch order
    augment_rng: torch.Generator
    device: torch.device
    precision: str  # what `precision: auto` became on this device
    stopping: EarlyStopping
    best_weights: dict[str, torch.Tensor] = field(repr=False)
    history: list[dict[str, float]] = field(default_factory=list)
    images_per_s: list[float] = field(default_factory=list)
    next_epoch: int = 1
    seconds: float = 0.0  # spent in earlier processes of this run (before a resume)

    @classmethod
    def start(
        cls,
        model: nn.Module,
        settings: TrainSettings,
        steps_per_epoch: int,
        device: torch.device,
        world: World,
    ) -> TrainingState:
        generator = torch.Generator().manual_seed(settings.seed)
        # One process draws its augmentations from the order generator; ranks each need their
        # own stream, since their shares of a batch may differ in size.
        augment_rng = (
            torch.Generator().manual_seed(settings.seed * 1000 + world.rank)
            if world.distributed
            else generator
        )
        optimizer = build_optimizer(model, settings)
        precision = resolve_precision(settings.precision, device)
        return cls(
            model=model,
            optimizer=optimizer,
            scheduler=build_scheduler(optimizer, settings, steps_per_epoch),
            scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
            generator=generator,
            augment_rng=augment_rng,
            device=device,
            precision=precision,
            stopping=EarlyStopping(settings.patience),
            best_weights=copy.deepcopy(model.state_dict()),
        )

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.precision)

    def last_epoch(self, epochs: int) -> int:
        return self.next_epoch - 1 if self.stopping.stopped else epochs

    def step(self, loss: torch.Tensor, trainable: list[nn.Parameter], grad_clip: float) -> None:
        """Backward, optional clipping, optimizer and schedule: one training step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def end_epoch(self, row: dict[str, float], images_per_s: float) -> None:
        self.history.append(row)
        self.images_per_s.append(images_per_s)
        if self.stopping.update(int(row["epoch"]), row["val_accuracy"], row["val_loss"]):
            self.best_weights = copy.deepcopy(self.model.state_dict())
        self.next_epoch = int(row["epoch"]) + 1

    def to_dict(self, seconds: float, run_id: str) -> dict[str, Any]:
        """Plain tensors and numbers, loadable with ``weights_only=True``."""
        rng: dict[str, Any] = {
            "generator": self.generator.get_state(),
            "torch": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        s = self.stopping
        return {
            "epoch": self.next_epoch - 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "history": self.history,
            "images_per_s": self.images_per_s,
            "best_state": self.best_weights,
            "best": [s.best_accuracy, s.best_loss, s.best_epoch, s.stale],
            "stopped_early": s.stopped,
            "seconds": self.seconds + seconds,
            "run_id": run_id,
        }

    def restore(self, saved: dict[str, Any] | None) -> None:
        """Continue from a state ``to_dict`` wrote (nothing to do for None)."""
        if saved is None:
            return
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.generator.set_state(saved["rng"]["generator"])
        torch.set_rng_state(saved["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in saved["rng"]:
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        self.history = [
            {k: v for k, v in row.items() if k != "images_per_s"} for row in saved["history"]
        ]
        self.images_per_s = list(saved.get("images_per_s", []))
        self.best_weights = saved["best_state"]
        best_accuracy, best_loss, best_epoch, stale = saved["best"]
        self.stopping = EarlyStopping(
            self.stopping.patience, best_accuracy, best_loss, best_epoch, stale
        )
        self.stopping.stopped = saved["stopped_early"]
        self.seconds = saved["seconds"]
        self.next_epoch = saved["epoch"] + 1
        log.info("resuming from the state saved after epoch %d", saved["epoch"])
