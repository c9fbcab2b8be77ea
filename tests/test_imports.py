"""Each stage imports only what it uses: every `dvc repro` starts one process per stage.

Measured here (-X importtime): timm with torch and torchvision 3.7 s, MLflow 1.5-1.8 s,
scikit-learn 1.7 s, scipy.stats 0.9 s. A shared module (the doctor) that imported the metrics
module once made the balance stage pay for torch and scikit-learn: 4-6 s instead of 0.7 s.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "timm", "mlflow", "sklearn", "scipy", "matplotlib")

# What each stage may import when its module loads; the rest waits until a function needs it.
ALLOWED = {
    "download": set(),
    "balance": set(),
    "compare": set(),
    "augment": {"torch", "torchvision"},
    "train": {"torch", "torchvision", "timm"},
    "evaluate": {"torch", "torchvision", "timm"},
}


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_a_stage_imports_only_the_libraries_it_needs(stage: str) -> None:
    code = (
        f"import json, sys, trackvision.cli, trackvision.stages.{stage}; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    imported = set(json.loads(out))
    assert imported <= ALLOWED[stage], f"{stage} imports {sorted(imported - ALLOWED[stage])}"
