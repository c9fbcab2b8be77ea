"""Which number format and memory layout a training run uses on this device.

``precision: auto`` exists because the same switch helps on one CPU and ruins another: bf16
autocast speeds training up on a CPU with AMX or AVX512-BF16 units and slows it down several
times on an AVX2-only CPU, where every bf16 op is emulated (docs/performance.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from trackvision.errors import TrainingError

log = logging.getLogger(__name__)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (CPU: AMX or AVX512-BF16, via oneDNN)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        # torch (2.14.1, which this was written against) has no public call for this; oneDNN's
        # own answer is the one its kernels use. tests/training/test_speed_levers.py checks it
        # against the CPU's flags, so a torch that drops or changes it fails there loudly.
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 where the device has it natively, else fp32; other values as given."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise TrainingError(
            f"precision fp16 needs a CUDA device, not {device.type}; use auto, bf16 or fp32"
        )
    if precision == "bf16" and not native_bf16(device):
        log.warning(
            "precision bf16 on a %s without native bf16 is emulated and can be many times slower "
            "than fp32; precision auto picks for the device",
            device.type,
        )
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None: fp32, no autocast)."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@contextmanager
def attention_for(
    model: nn.Module, device: torch.device, amp_dtype: torch.dtype | None
) -> Iterator[None]:
    """Within the block, timm attention layers take timm's non-fused branch under CPU autocast.

    The CPU's fused attention backward is far slower in bf16 than in fp32, while timm's plain
    branch (matmuls and a softmax) runs well in bf16. ``fused_attn`` is timm's own switch; the
    layers get their setting back when the block ends.
    """
    switched = []
    if device.type == "cpu" and amp_dtype is not None:
        switched = [m for m in model.modules() if getattr(m, "fused_attn", False) is True]
    for module in switched:
        module.fused_attn = False
    try:
        yield
    finally:
        for module in switched:
            module.fused_attn = True
