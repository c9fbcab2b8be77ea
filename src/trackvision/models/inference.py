"""Batched forward passes over packed uint8 images, shared by validation, evaluation and export."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trackvision.models.preprocessing import Preprocessing


def to_nchw(images: np.ndarray) -> torch.Tensor:
    """N x H x W x C uint8 array (possibly memory-mapped) -> contiguous N x C x H x W tensor."""
    # A copy: memory-mapped splits are read-only, and torch wants tensors it may write to.
    return torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    preprocess: Preprocessing,
    batch_size: int,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Logits (fp32) for every image of a uint8 NCHW tensor, in eval mode; returned on the CPU.

    ``amp_dtype`` runs the passes under autocast, as training does; ``channels_last`` lays the
    batches out NHWC, for a model kept in that memory format (oneDNN's fast kernels)."""
    was_training = model.training
    model.eval()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    out = []
    for i in range(0, len(images), batch_size):
        x = preprocess(images[i : i + batch_size].to(device)).contiguous(memory_format=layout)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an explicit name is used as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
