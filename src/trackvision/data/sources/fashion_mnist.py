"""Fashion-MNIST (Zalando): 60,000 train + 10,000 test greyscale 28x28 images, 10 classes.

The official split is kept: train and test as given; balance carves validation from train only.
The 70,000 images are packed (``data/rawset.py``): one PNG per image inside one file, not 70,000.
"""

from __future__ import annotations

import gzip
import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from trackvision.data.fetch import RemoteFile, file_digest
from trackvision.data.rawset import PackWriter
from trackvision.data.sources import FetchContext, register_source
from trackvision.errors import ConfigError, DataError

BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {  # name -> published MD5 (the same torchvision checks)
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CLASSES = (
    "T-shirt_top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle_boot",
)  # "T-shirt/top" and "Ankle boot", made safe as folder names


@dataclass(frozen=True)
class FashionMnistOptions:
    per_class: int = 0  # keep at most this many images per class and split (0 = all)

    def validate(self, key: str) -> None:
        if self.per_class < 0:
            raise ConfigError(f"{key}.per_class: must be >= 0, got {self.per_class}")


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format="PNG")
    return buf.getvalue()


def read_idx(path: Path) -> np.ndarray:
    """Decode a gzipped IDX file: images (magic 2051) -> N x rows x cols, labels (2049) -> N."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 8:
        raise DataError(f"{path}: too short to be an IDX file")
    magic, count = struct.unpack(">II", data[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        expected, offset, shape = count * rows * cols, 16, (count, rows, cols)
    elif magic == 2049:
        expected, offset, shape = count, 8, (count,)
    else:
        raise DataError(f"{path}: bad IDX magic number {magic} (expected 2051 or 2049)")
    if len(data) - offset != expected:
        raise DataError(
            f"{path}: header says {expected} bytes of data, file has {len(data) - offset}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


@register_source("fashion_mnist", options=FashionMnistOptions, channels=1, presplit=True)
def fetch_fashion_mnist(
    out_dir: Path, options: FashionMnistOptions, context: FetchContext
) -> dict[str, Any]:
    """Zalando's Fashion-MNIST, MD5-checked, official train/test split kept."""
    paths = {
        name: context.downloader.fetch(RemoteFile(BASE + name, name, md5))
        for name, md5 in FILES.items()
    }
    counts: dict[str, dict[str, int]] = {}
    with PackWriter(out_dir, sorted(CLASSES)) as pack:
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images = read_idx(paths[f"{prefix}-images-idx3-ubyte.gz"])
            labels = read_idx(paths[f"{prefix}-labels-idx1-ubyte.gz"])
            if len(images) != len(labels) or labels.max(initial=0) >= len(CLASSES):
                raise DataError(
                    f"fashion_mnist {split}: {len(images)} images, {len(labels)} labels, "
                    f"largest label {labels.max(initial=0)}"
                )
            seen = dict.fromkeys(range(len(CLASSES)), 0)
            for i in tqdm(
                range(len(images)), desc=f"fashion_mnist {split}", unit="img", disable=None
            ):
                label = int(labels[i])
                if options.per_class and seen[label] >= options.per_class:
                    continue
                seen[label] += 1
                name = CLASSES[label]
                pack.add(f"{split}/{name}/{i:05d}.png", name, _png(images[i]), split)
            counts[split] = {CLASSES[k]: v for k, v in seen.items()}
    return {
        "images": sum(sum(c.values()) for c in counts.values()),
        "classes": list(CLASSES),
        "counts": counts,
        "archives": {
            name: {"sha256": file_digest(path), "md5": FILES[name]} for name, path in paths.items()
        },
    }
