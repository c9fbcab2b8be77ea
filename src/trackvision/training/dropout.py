"""A faster dropout for CPU training, swapped in for ``nn.Dropout`` while a model trains.

PyTorch's CPU dropout draws one Bernoulli sample per element from a scalar generator: in the
project's ViT that was 27% of a training step (profiled). Drawing 64-bit words with ``random_``
and reading each as four 15-bit uniforms gives the same distribution (keep probability
``1 - p`` to within 2^-15) from a quarter of the draws, still from torch's seeded generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 15  # each 16-bit lane, top bit cleared, is uniform on [0, 2^15)


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode (inverted) dropout of ``x``: zero with probability ``p``, else x / (1 - p)."""
    if p <= 0.0:
        return x
    if round(p * _LEVELS) >= _LEVELS:  # p >= 1 - 2^-16: no lane reaches the threshold
        return torch.zeros_like(x)
    return _ScaledMask.apply(x, p)


class _ScaledMask(torch.autograd.Function):
    """``x * mask`` with the mask (0 or 1 / (1 - p)) built once and reused by the backward.

    One multiply each way instead of two (keep, then scale): a quarter off a ViT dropout's
    forward + backward, and bit-identical results, since x * (1 * s) == (x * 1) * s.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
        lanes = words.view(torch.int16)[:n].view(x.shape).bitwise_and_(_LEVELS - 1)
        # keep = lanes >= threshold, in int16 arithmetic: sub-clamp-add gives 0 or 1 without
        # a bool tensor, whose comparison and conversion to float were 2-3x slower here.
        # (lanes - threshold) stays within int16 for every threshold in [0, 2^15).
        keep = lanes.sub_(round(p * _LEVELS)).clamp_(-1, 0).add_(1)
        mask = keep.to(x.dtype).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class FastDropout(nn.Dropout):
    """``nn.Dropout`` that uses :func:`fast_dropout` on the CPU (elsewhere the native kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu":
            return F.dropout(x, self.p, self.training, self.inplace)
        return fast_dropout(x, self.p)


@contextmanager
def cpu_fast_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, each plain ``nn.Dropout`` of ``model`` is a ``FastDropout``."""
    swapped: list[tuple[nn.Module, str, nn.Dropout]] = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
                swapped.append((parent, name, child))
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
