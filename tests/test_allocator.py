"""The allocator settings: freed activations stay in the heap (counted in page faults, not time)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from trackvision import allocator

# Steps of the report's CNN (fp32, NHWC, as `fit` trains it); prints minor page faults per step.
_STEPS = """
import resource, sys, torch
if sys.argv[1] == "tuned":
    from trackvision.allocator import tune_allocator
    tune_allocator()
from trackvision.models.cnn import ReportCNN
torch.manual_seed(0)
model = ReportCNN(1, 2, 28).to(memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters())
x = torch.randn(64, 1, 28, 28).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 2, (64,))
def step():
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _faults_per_step(mode: str) -> float:
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "0"}  # count 4 KiB pages in both runs
    env.pop("OMP_NUM_THREADS", None)  # every core, as training uses (not a test worker's share)
    done = subprocess.run(
        [sys.executable, "-c", _STEPS, mode], env=env, capture_output=True, text=True, check=True
    )
    return float(done.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_training_steps_stop_faulting_pages_once_freed_blocks_stay_in_the_heap() -> None:
    plain, tuned = _faults_per_step("plain"), _faults_per_step("tuned")
    # Measured: about 5,000-6,000 faults a step by default (11 MB activations handed back to the
    # OS and faulted in again), a few hundred at most once tuned.
    assert plain > 1000, plain
    assert tuned * 5 < plain, (plain, tuned)


def test_tuning_is_idempotent_and_a_users_huge_page_choice_wins(monkeypatch) -> None:
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    first = allocator.tune_allocator()
    assert first["huge_pages"] is False and os.environ["THP_MEM_ALLOC_ENABLE"] == "0"
    assert first["heap_keeps_freed"] is (platform.libc_ver()[0] == "glibc")
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")
    assert allocator.tune_allocator() is first  # settled once per process


def test_huge_pages_are_asked_for_by_default(monkeypatch) -> None:
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    assert allocator.tune_allocator()["huge_pages"] is True
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
