"""A trained network with its preprocessing and class names: raw images in, probabilities out.

This is what MLflow stores as "the model" (and what ``models:/<name>@champion`` loads), what
``trackvision predict`` runs and what ``trackvision export`` writes, so a consumer never has to
know the mean/std/size the network was trained with.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from trackvision.errors import DataError
from trackvision.models.preprocessing import Preprocessing


class PackagedClassifier(nn.Module):
    """uint8 N x C x H x W images (any H, W) -> class probabilities N x len(classes).

    ``decode_size``: the side images were decoded to before training (``data.image_size``);
    feeding files decoded the same way reproduces the training inputs exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: Preprocessing,
        classes: list[str],
        channels: int,
        decode_size: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.classes = list(classes)
        self.channels = channels
        self.decode_size = decode_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(images)).float().softmax(dim=-1)


def load_packaged(ref: str) -> PackagedClassifier:
    """A trained model from a folder (``models/<name>/``, no unpickling) or an MLflow model URI
    (``models:/<name>@champion``, ``runs:/<id>/model``: MLflow unpickles it; trust the store)."""
    if ref.startswith(("models:/", "runs:/")):
        import mlflow.pytorch

        from trackvision.tracking import resolve_tracking_uri, use_tracking_uri

        use_tracking_uri(resolve_tracking_uri())
        try:
            model = mlflow.pytorch.load_model(ref, map_location="cpu")
        except Exception as exc:  # MLflow raises its own exception types for missing models
            raise DataError(f"--model {ref}: not loadable from the tracking store: {exc}") from None
        if not isinstance(model, PackagedClassifier):
            raise DataError(f"--model {ref}: not a model this project logged ({type(model)})")
        return model.eval()
    from trackvision.training.checkpoint import load_checkpoint

    model_dir = Path(ref)
    if not model_dir.is_dir():
        raise DataError(
            f"--model {ref}: no such folder; give models/<name>/ or models:/<name>@champion"
        )
    network, card, preprocess = load_checkpoint(model_dir)
    decode_size = card.decode_size or preprocess.input_size[1]
    return PackagedClassifier(network, preprocess, card.classes, card.in_chans, decode_size).eval()
