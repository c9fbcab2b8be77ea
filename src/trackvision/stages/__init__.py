"""The pipeline's stages as plain functions: Config and Layout in, files declared in dvc.yaml out.

One module per DVC stage, so each stage in dvc.yaml depends on its own code only. The CLI (and so
DVC) calls these; tests call them directly. Every output is written to a temporary path and renamed
into place, so an interrupted stage leaves the previous outputs intact.
"""

import importlib
from typing import Any

__all__ = ["augment", "balance", "compare", "download", "evaluate", "train"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: the data stages should not pay for torch, timm and MLflow imports.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    function = getattr(importlib.import_module(f"{__name__}.{name}"), name)
    globals()[name] = function  # replaces the submodule the import bound to this name
    return function
