"""The Fashion-MNIST report's Keras CNN, ported to PyTorch.

conv(64, 3x3, ReLU) -> BN -> maxpool -> conv(128, 3x3, ReLU) -> BN -> maxpool -> flatten ->
dropout -> dense(128, ReLU) -> linear head (softmax lives in the loss). Keras' 'valid' padding.
"""

from __future__ import annotations

import torch
from torch import nn


class ReportCNN(nn.Module):
    def __init__(
        self,
        in_chans: int,
        num_classes: int,
        image_size: int,
        width: int = 64,
        dense: int = 128,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(width),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(2 * width),
            nn.MaxPool2d(2),
        )
        side = ((image_size - 2) // 2 - 2) // 2
        if side < 1:
            raise ValueError(
                f"image_size {image_size} is too small for two conv+pool blocks (>= 10)"
            )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * width * side * side, dense),
            nn.ReLU(inplace=True),
            nn.Linear(dense, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
