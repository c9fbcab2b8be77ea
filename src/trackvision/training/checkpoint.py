"""A trained model on disk: safetensors weights + the JSON needed to rebuild and feed it.

``models/<name>/`` holds ``model.safetensors``, ``model.json`` (architecture, classes, channels)
and ``preprocessing.json``. Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from trackvision.atomic import atomic_path, write_json
from trackvision.errors import DataError
from trackvision.models.preprocessing import Preprocessing
from trackvision.models.zoo import create_model

log = logging.getLogger(__name__)

# Everything load_checkpoint reads; MLflow's logged model carries the same files.
CHECKPOINT_FILES = ("model.safetensors", "model.json", "preprocessing.json")


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
    decode_size: int = 0  # data.image_size at training; 0 in checkpoints from before it was kept


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


def weights_sha256(directory: Path) -> str:
    """The sha256 of a checkpoint's weights file: which model this is, in any tracking store."""
    digest = hashlib.sha256()
    with open(directory / "model.safetensors", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(directory: Path) -> tuple[nn.Module, ModelCard, Preprocessing]:
    """Rebuild the model saved in ``directory`` with its weights, in eval mode."""
    weights = directory / "model.safetensors"
    for path in (directory / name for name in CHECKPOINT_FILES):
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


@dataclass
class ResumeFile:
    """Where a run's full training state goes after every epoch, and what it must match.

    The state (model, optimizer, scheduler, scaler, RNG, history, early-stopping counters) is a
    plain dict of tensors and numbers: written with ``torch.save``, read back with
    ``weights_only=True``, so a state file can never run code. ``fingerprint`` names everything
    that shaped the run (settings, data, model); a state saved under another one is ignored.
    """

    path: Path
    fingerprint: str
    _loaded: dict[str, Any] | None = field(default=None, init=False, repr=False)
    _read: bool = field(default=False, init=False, repr=False)

    def load(self) -> dict[str, Any] | None:
        """The saved state if there is one for this fingerprint, else None (read once)."""
        if not self._read:
            self._loaded, self._read = self._load(), True
        return self._loaded

    def _load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file must not block a fresh start
            log.warning("%s: unreadable training state (%s); starting afresh", self.path, exc)
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            log.info("%s: saved for other settings or data; starting afresh", self.path)
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically: a kill mid-write leaves the previous epoch's state."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            torch.save({**state, "fingerprint": self.fingerprint}, tmp)
        self._read = False  # the next load reads what is on disk now

    def clear(self) -> None:
        """Forget the state (the run finished and its outputs are written)."""
        self.path.unlink(missing_ok=True)
        self._loaded, self._read = None, True
