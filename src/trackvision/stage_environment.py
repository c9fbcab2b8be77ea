"""Variables a stage's entry point sets because they change the bytes the stage writes.

A module of its own so that dvc.yaml can list it as those stages' input: editing the rest of the
CLI then reruns nothing.
"""

from __future__ import annotations

STAGE_ENVIRONMENT: dict[str, dict[str, str]] = {
    # MKL picks its code path by CPU, and torchvision's rotation grid goes through it: the last
    # bits, and so some pixels, differed between CPU vendors. MKL's "compatible" path gives the
    # same bytes on every x86 CPU; augment's few small matrix products do not feel it.
    "augment": {"MKL_CBWR": "COMPATIBLE"},
}
