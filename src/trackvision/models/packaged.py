"""A trained network with its preprocessing and class names: raw images in, probabilities out.

This is what MLflow stores as "the model" (and what ``models:/<name>@champion`` loads), so a
consumer never has to know the mean/std/size the network was trained with.
"""

from __future__ import annotations

import torch
from torch import nn

from trackvision.models.preprocessing import Preprocessing


class PackagedClassifier(nn.Module):
    """uint8 N x C x H x W images (any H, W) -> class probabilities N x len(classes)."""

    def __init__(self, model: nn.Module, preprocess: Preprocessing, classes: list[str]) -> None:
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.classes = list(classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(images)).float().softmax(dim=-1)
