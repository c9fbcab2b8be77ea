"""A trained model on disk: safetensors weights + the JSON needed to rebuild and feed it.

``models/<name>/`` holds ``model.safetensors``, ``model.json`` (architecture, classes, channels)
and ``preprocessing.json``. Loading never unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from trackvision.atomic import write_json
from trackvision.errors import DataError
from trackvision.models.preprocessing import Preprocessing
from trackvision.models.zoo import create_model


@dataclass(frozen=True)
class ModelCard:
    """What is needed to rebuild a trained model, besides its weights."""

    name: str
    family: str
    arch: dict[str, Any]
    classes: list[str]
    in_chans: int
    image_size: int
    pretrained: str


def save_checkpoint(
    directory: Path, state: dict[str, torch.Tensor], card: ModelCard, preprocessing: Preprocessing
) -> None:
    """Write weights, card and preprocessing into ``directory`` (the caller makes it atomic)."""
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared storage; contiguous clones make every tensor its own.
    save_file(
        {k: v.detach().cpu().contiguous().clone() for k, v in state.items()},
        str(directory / "model.safetensors"),
    )
    write_json(directory / "model.json", card.__dict__)
    preprocessing.save(directory / "preprocessing.json")


def load_checkpoint(directory: Path) -> tuple[nn.Module, ModelCard, Preprocessing]:
    """Rebuild the model saved in ``directory`` with its weights, in eval mode."""
    weights = directory / "model.safetensors"
    for path in (weights, directory / "model.json", directory / "preprocessing.json"):
        if not path.is_file():
            raise DataError(f"{path}: missing; train the model first (dvc repro train)")
    card = ModelCard(**json.loads((directory / "model.json").read_text(encoding="utf-8")))
    model = create_model(
        card.name,
        num_classes=len(card.classes),
        in_chans=card.in_chans,
        image_size=card.image_size,
        arch=card.arch,
    )
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    if missing or unexpected:
        raise DataError(
            f"{weights}: does not fit {card.name}: missing {missing}, unexpected {unexpected}"
        )
    return model.eval(), card, Preprocessing.load(directory / "preprocessing.json")
