"""Each stage imports only what it uses: every `dvc repro` starts one process per stage.

Measured here (-X importtime): timm with torch and torchvision 3.7-4.5 s, MLflow 1.5-1.8 s,
scikit-learn 1.7 s, scipy.stats 0.9 s. A shared module (the doctor) that imported the metrics
module once made the balance stage pay for torch and scikit-learn: 4-6 s instead of 0.7 s.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "timm", "mlflow", "sklearn", "scipy", "matplotlib")

# What each module may import when it loads: every stage's module, and the modules evaluate
# loads inside its function (so they would escape a check of the stage module alone).
ALLOWED = {
    "trackvision.stages.download": set(),
    "trackvision.stages.balance": set(),
    "trackvision.stages.compare": set(),
    "trackvision.stages.augment": {"torch"},
    "trackvision.stages.train": {"torch"},
    "trackvision.stages.evaluate": {"torch"},
    "trackvision.doctor": set(),
    "trackvision.evaluation.metrics": {"torch"},
    "trackvision.evaluation.footprint": {"torch"},
    "trackvision.evaluation.plots": {"matplotlib"},
}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_a_stage_module_imports_only_the_libraries_it_needs(module: str) -> None:
    code = (
        f"import json, sys, trackvision.cli, {module}; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    imported = set(json.loads(out))
    assert imported <= ALLOWED[module], f"{module} imports {sorted(imported - ALLOWED[module])}"


def test_the_report_cnn_is_built_without_timm_or_torchvision() -> None:
    # timm's import pulls torchvision and torch._dynamo: seconds in every stage process of the
    # cnn (a search's trials pay them twice each) that only timm's models need.
    code = (
        "import json, sys; from trackvision.models.zoo import create_model; "
        "create_model('cnn', num_classes=2, in_chans=3, image_size=32); "
        "heavy = ('timm', 'torchvision', 'torch._dynamo'); "
        "print(json.dumps([m for m in heavy if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


def test_dvc_parses_yaml_with_the_c_parser() -> None:
    # DVC loads dvc.yaml, dvc.lock and params.yaml dozens of times per `dvc exp run` through
    # ruamel.yaml's "safe" loader, which falls back to pure Python without ruamel.yaml.clib.
    from ruamel.yaml import YAML

    assert YAML(typ="safe").Parser.__name__ == "CParser"
