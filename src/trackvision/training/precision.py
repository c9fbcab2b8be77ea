"""Which number format and memory layout a training run uses on this device.

``precision: auto`` exists because the same switch helps on one CPU and ruins another: bf16
autocast ran the report's CNN 2.4x faster on a CPU with AMX units, and 8x *slower* on an AVX2-only
EPYC, where every bf16 op is emulated (see the README's speed section).
"""

from __future__ import annotations

import logging

import torch

from trackvision.errors import TrainingError

log = logging.getLogger(__name__)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (CPU: AMX or AVX512-BF16, via oneDNN)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
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
            "than fp32 (the report's CNN: 8x here); precision auto picks for the device",
            device.type,
        )
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None: fp32, no autocast)."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
