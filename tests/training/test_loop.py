"""The training loop learns, is reproducible, stops on NaN, and checkpoints load safely."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trackvision.config import TrainSettings
from trackvision.data.packed import Split
from trackvision.errors import TrainingError
from trackvision.models.preprocessing import Preprocessing
from trackvision.models.zoo import create_model
from trackvision.tracking import NullTracker, Tracker
from trackvision.training.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from trackvision.training.loop import FitResult, fit
from trackvision.training.optim import warmup_cosine

SETTINGS = TrainSettings(
    lr=3e-3,
    epochs=4,
    batch_size=16,
    weight_decay=0.0,
    seed=0,
    patience=0,
    image_size=16,
    device="cpu",
    warmup_epochs=0,
    label_smoothing=0.0,
    shift=0,
    hflip=False,
    precision="fp32",
    channels_last=False,
    optimizer="adamw",
    grad_clip=0.0,
    finetune="full",
    head_epochs=1,
    backbone_lr_scale=0.1,
    subset=1.0,
)
PRE = Preprocessing((0.5,), (0.5,), (1, 16, 16), "bilinear", "test")


def _bright_vs_dark(n: int, seed: int) -> Split:
    """An easy task: class 1 has a bright square somewhere, class 0 does not."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 80, (n, 16, 16, 1), dtype=np.uint8)
    labels = np.arange(n) % 2
    for i in np.flatnonzero(labels):
        y, x = rng.integers(0, 10, 2)
        images[i, y : y + 6, x : x + 6] = 250
    return Split(images, labels)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(
        "cnn", num_classes=2, in_chans=1, image_size=16, arch={"width": 8, "dense": 16}
    )


def fit_toy(
    settings: TrainSettings = SETTINGS,
    *,
    model: torch.nn.Module | None = None,
    n: int = 64,
    tracker: Tracker | None = None,
) -> FitResult:
    """``fit`` on the bright-vs-dark task: ``n`` training images, ``n // 2`` for validation."""
    model = model if model is not None else _model()
    val = _bright_vs_dark(n // 2, 1)
    return fit(model, _bright_vs_dark(n, 0), val, settings, PRE, torch.device("cpu"), tracker)


class _Recorder(NullTracker):
    def __init__(self) -> None:
        self.metrics: list[tuple[int | None, dict]] = []
        self.params: dict = {}

    def log_params(self, params) -> None:
        self.params.update(params)

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append((step, dict(metrics)))


def test_fit_learns_and_reports_every_epoch() -> None:
    recorder = _Recorder()
    result = fit_toy(n=128, tracker=recorder)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert result.best_val_accuracy >= 0.9
    assert [step for step, _ in recorder.metrics] == [1, 2, 3, 4]
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy"} <= set(
        recorder.metrics[0][1]
    )
    assert recorder.params == {"train.precision_used": "fp32"}


def test_same_seed_same_history() -> None:
    runs = [fit_toy() for _ in range(2)]
    assert runs[0].history[-1]["val_loss"] == runs[1].history[-1]["val_loss"]
    assert runs[0].history[-1]["train_loss"] == runs[1].history[-1]["train_loss"]


def test_early_stopping_keeps_the_best_epoch() -> None:
    settings = SETTINGS.model_copy(update=dict(epochs=30, patience=2))
    val = _bright_vs_dark(32, 1)
    noisy_val = type(val)(val.images, np.random.default_rng(5).integers(0, 2, len(val)))
    result = fit(_model(), _bright_vs_dark(64, 0), noisy_val, settings, PRE, torch.device("cpu"))
    assert result.stopped_early and len(result.history) < 30
    best = max(r["val_accuracy"] for r in result.history)
    assert result.best_val_accuracy == best


def test_nan_loss_names_epoch_and_step() -> None:
    settings = SETTINGS.model_copy(update=dict(lr=1e30))
    with pytest.raises(TrainingError, match=r"at epoch \d+, step \d+"):
        fit_toy(settings)


def test_warmup_then_cosine() -> None:
    f = warmup_cosine(total_steps=100, warmup_steps=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(100) == pytest.approx(0.0)


def test_checkpoint_round_trip_without_pickle(tmp_path) -> None:
    model = _model()
    card = ModelCard("cnn", "cnn", {"width": 8, "dense": 16}, ["a", "b"], 1, 16, "none")
    save_checkpoint(tmp_path, model.state_dict(), card, PRE)
    assert not list(tmp_path.glob("*.pt*"))  # safetensors only
    loaded, loaded_card, loaded_pre = load_checkpoint(tmp_path)
    x = torch.randn(3, 1, 16, 16)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    assert loaded_card == card and loaded_pre == PRE
