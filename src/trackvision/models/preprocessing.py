"""The one place that decides how uint8 pixels become model input; saved beside every checkpoint.

For timm models the values come from the model's pretrained config
(``timm.data.resolve_model_data_config``), never from constants: timm's MobileViT, for one, expects
inputs in [0, 1] with no ImageNet normalisation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from trackvision.atomic import write_json


@dataclass(frozen=True)
class Preprocessing:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]  # (C, H, W) the model is fed
    interpolation: str
    source: str  # where mean/std came from, for the record

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) NCHW batch -> normalised float batch of ``input_size``."""
        x = x.float().div_(255.0)
        if tuple(x.shape[-2:]) != self.input_size[1:]:
            mode = "bicubic" if self.interpolation == "bicubic" else "bilinear"
            x = F.interpolate(
                x, size=self.input_size[1:], mode=mode, antialias=True, align_corners=False
            )
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> Preprocessing:
        d = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            input_size=tuple(d["input_size"]),
            interpolation=d["interpolation"],
            source=d["source"],
        )


def resolve_preprocessing(
    model: nn.Module, family: str, channels: int, image_size: int
) -> Preprocessing:
    """Mean/std/interpolation from the model's own config; size from the training settings."""
    if family != "timm":
        # The project's own models are trained from scratch on [-1, 1] inputs.
        return Preprocessing(
            (0.5,) * channels,
            (0.5,) * channels,
            (channels, image_size, image_size),
            "bilinear",
            "project default for models trained from scratch",
        )
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    mean, std = tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
    if channels != len(mean):
        # Greyscale into an RGB-configured model: timm sums the first conv over channels, so the
        # single channel is normalised with the channel average.
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    return Preprocessing(
        mean,
        std,
        (channels, image_size, image_size),
        str(cfg.get("interpolation", "bilinear")),
        f"timm.data.resolve_model_data_config (native input {tuple(cfg['input_size'])})",
    )
