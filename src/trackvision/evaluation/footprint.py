"""What a model costs on a small device: parameters, file size, CPU latency per image."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from trackvision.training.precision import native_bf16


def median_ms(call: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``call()`` in ms, after ``warmup`` untimed calls."""
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        call()
        if i >= warmup:  # the first calls pay for allocation and kernel selection
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def cpu_latency_ms(model: nn.Module, example: torch.Tensor, repeats: int, warmup: int = 3) -> float:
    """Median wall time of one forward pass of ``example`` (batch 1) on the CPU, in ms."""
    model = model.cpu().eval()
    example = example.cpu()
    with torch.inference_mode():
        return median_ms(lambda: model(example), repeats, warmup)


def footprint(model: nn.Module, weights: Path) -> dict:
    """Parameter count and weights file size (MB): what the model is, the same on every run."""
    return {
        "n_params": sum(p.numel() for p in model.parameters()),
        "model_size_mb": round(weights.stat().st_size / 1e6, 3),
    }


def latency(model: nn.Module, example: torch.Tensor, repeats: int) -> dict:
    """Median CPU latency per image (ms) and the threads it ran on: different on every run."""
    return {
        "cpu_latency_ms": round(cpu_latency_ms(model, example, repeats), 3),
        "cpu_threads": torch.get_num_threads(),
        "repeats": repeats,
    }


def machine() -> dict[str, object]:
    """The CPU a figure was measured on: speed results mean nothing without it."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = getattr(os, "sched_getaffinity", None)  # Linux: the cores this process may use
    return {
        "cpu": name,
        "cores": len(affinity(0)) if affinity else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(torch.device("cpu")),
        "torch": torch.__version__,
    }
