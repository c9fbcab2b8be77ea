"""The logged model as an application calls it: encoded photos in, labels out.

MLflow serves it as a pyfunc logged as code (``mlflow_model.py``), the network's weights as
safetensors beside it: ``mlflow models serve -m models:/<name>@champion`` answers a JSON column
``image`` of base64 strings, ``mlflow.pyfunc.load_model(uri).predict(df)`` a column of raw bytes.
Each photo is decoded as ``trackvision predict`` decodes it (``data/images.py``: EXIF rotation,
colour modes, the decompression-bomb limit, the resize to the decode size training used), so both
give the same probabilities.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel

from trackvision.data.images import ImageDecodeError, load_image
from trackvision.models.packaged import PackagedClassifier, from_checkpoint

COLUMN = "image"  # the input column: one encoded image (JPEG, PNG, ...) per row
OUTPUT_COLUMNS = ("label", "probability", "probabilities", "error")


def _image_bytes(value: Any) -> bytes:
    """A row's image: raw bytes, or a base64 string (as JSON carries bytes)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ImageDecodeError(COLUMN, "not base64: expected an encoded image") from None
    raise ImageDecodeError(COLUMN, f"expected bytes or a base64 string, got {type(value).__name__}")


def _decode(classifier: PackagedClassifier, row: int, value: Any) -> np.ndarray:
    """Row ``row`` as C x H x W uint8 at the classifier's decode size."""
    data = _image_bytes(value)
    image = load_image(Path(f"row {row}"), classifier.channels, classifier.decode_size, data=data)
    return np.ascontiguousarray(image.transpose(2, 0, 1))


@torch.no_grad()
def classify(classifier: PackagedClassifier, images: Iterable[Any]) -> pd.DataFrame:
    """One row per image: the label, its probability, every class's probability by name, and
    the reason when the image could not be read (the other rows are classified all the same)."""
    decoded: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for row, value in enumerate(images):
        try:
            decoded[row] = _decode(classifier, row, value)
        except ImageDecodeError as exc:
            errors[row] = exc.reason
    rows = len(decoded) + len(errors)
    probs = (
        classifier(torch.from_numpy(np.stack(list(decoded.values())))).numpy()
        if decoded
        else np.empty((0, len(classifier.classes)))
    )
    by_row = dict(zip(decoded, probs, strict=True))
    records = []
    for row in range(rows):
        if row in errors:
            failed = {"label": "", "probability": 0.0, "probabilities": {}, "error": errors[row]}
            records.append(failed)
            continue
        p = by_row[row]
        k = int(p.argmax())
        records.append(
            {
                "label": classifier.classes[k],
                "probability": float(p[k]),
                "probabilities": dict(zip(classifier.classes, map(float, p), strict=True)),
                "error": "",
            }
        )
    return pd.DataFrame.from_records(records, columns=list(OUTPUT_COLUMNS))


class PhotoClassifier(PythonModel):
    """MLflow's pyfunc over a checkpoint's safetensors: loading it never unpickles."""

    def load_context(self, context: Any) -> None:
        self.classifier = from_checkpoint(Path(context.artifacts["model.json"]).parent)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return classify(self.classifier, model_input[COLUMN])
