"""A trained network with its preprocessing and class names: raw images in, probabilities out.

This is what the model MLflow stores runs (``trackvision.serving``: the checkpoint's safetensors
and JSON files as a pyfunc's artifacts, what ``models:/<name>@champion`` loads), what
``trackvision predict`` runs and what ``trackvision export`` writes, so a consumer never has to
know the mean/std/size the network was trained with.
"""

from __future__ import annotations

import tempfile
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


def is_logged_model(ref: str) -> bool:
    """Whether ``ref`` names a model in the MLflow store rather than a local folder."""
    return ref.startswith(("models:/", "runs:/"))


def load_packaged(ref: str, tracking_uri: str = "") -> PackagedClassifier:
    """A trained model from a folder (``models/<name>/``) or an MLflow model URI
    (``models:/<name>@champion``, ``runs:/<id>/model``); neither way unpickles anything.

    ``tracking_uri``: params.yaml's ``mlflow.tracking_uri`` (MLFLOW_TRACKING_URI overrides it).
    """
    if is_logged_model(ref):
        return _load_logged(ref, tracking_uri)
    model_dir = Path(ref)
    if not model_dir.is_dir():
        raise DataError(
            f"--model {ref}: no such folder; give models/<name>/ or models:/<name>@champion"
        )
    return from_checkpoint(model_dir)


def from_checkpoint(directory: Path) -> PackagedClassifier:
    """The classifier saved in ``directory`` (safetensors + JSON), in eval mode."""
    from trackvision.training.checkpoint import load_checkpoint

    network, card, preprocess = load_checkpoint(directory)
    decode_size = card.decode_size or preprocess.input_size[1]
    return PackagedClassifier(network, preprocess, card.classes, card.in_chans, decode_size).eval()


def _load_logged(ref: str, tracking_uri: str) -> PackagedClassifier:
    """Rebuild a model MLflow stores from the checkpoint files the project logs beside it."""
    import mlflow.artifacts

    from trackvision.tracking import resolve_tracking_uri, use_tracking_uri

    use_tracking_uri(resolve_tracking_uri(tracking_uri))
    with tempfile.TemporaryDirectory(prefix="trackvision-model-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=tmp))
        except Exception as exc:  # MLflow raises its own exception types for missing models
            raise DataError(f"--model {ref}: not loadable from the tracking store: {exc}") from None
        # The pyfunc's artifacts; models logged by earlier versions kept them as extra files.
        files = next((d for d in (local / "artifacts", local / "extra_files") if d.is_dir()), local)
        if not (files / "model.safetensors").is_file():
            raise DataError(
                f"--model {ref}: holds no model.safetensors (models logged before trackvision "
                "kept its checkpoint files in MLflow are pickles, which this command does not "
                "load); retrain it, or give the local folder models/<name>/"
            )
        return from_checkpoint(files)
