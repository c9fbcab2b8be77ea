"""Small archives in the real datasets' layouts, for serving on loopback (no network in tests)."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import zipfile

import numpy as np
from PIL import Image


def jpeg(seed: int, size: int = 24, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx_images(images: np.ndarray) -> bytes:
    n, rows, cols = images.shape
    return gzip.compress(struct.pack(">IIII", 2051, n, rows, cols) + images.tobytes(), mtime=0)


def idx_labels(labels: np.ndarray) -> bytes:
    return gzip.compress(
        struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes(), mtime=0
    )


def fashion_mnist(n_train: int = 40, n_test: int = 20) -> dict[str, bytes]:
    """The four IDX gz files, labels cycling through the 10 classes."""
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        files[f"{prefix}-images-idx3-ubyte.gz"] = idx_images(
            rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        )
        files[f"{prefix}-labels-idx1-ubyte.gz"] = idx_labels(np.arange(n) % 10)
    return files


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def msra_td500(n_train: int = 12, n_test: int = 4) -> bytes:
    entries = {}
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 500)):
        for i in range(n):
            entries[f"MSRA-TD500/{split}/IMG_{offset + i:04d}.JPG"] = jpeg(offset + i)
            entries[f"MSRA-TD500/{split}/IMG_{offset + i:04d}.gt"] = b"0 0 10 10 20 5 0.1\n"
    return _zip(entries)


def flickr8k(n: int = 15) -> bytes:
    return _zip({f"Flicker8k_Dataset/{1000 + i}_{i:04x}.jpg": jpeg(1000 + i) for i in range(n)})


TINY_WNIDS = ("n01443537", "n01629819", "n01641577")
TINY_WORDS = {
    "n01443537": "goldfish, Carassius auratus",
    "n01629819": "European fire salamander",
    "n01641577": "bullfrog, Rana catesbeiana",
    "n99999999": "not in this set",
}


def tiny_imagenet(per_class: int = 6, val_per_class: int = 2) -> bytes:
    root = "tiny-imagenet-200"
    entries = {
        f"{root}/wnids.txt": "\n".join(TINY_WNIDS).encode() + b"\n",
        f"{root}/words.txt": "".join(f"{k}\t{v}\n" for k, v in TINY_WORDS.items()).encode(),
    }
    annotations = []
    for c, wnid in enumerate(TINY_WNIDS):
        for i in range(per_class):
            entries[f"{root}/train/{wnid}/images/{wnid}_{i}.JPEG"] = jpeg(100 * c + i)
        entries[f"{root}/train/{wnid}/{wnid}_boxes.txt"] = b""
        for i in range(val_per_class):
            name = f"val_{c * val_per_class + i}.JPEG"
            entries[f"{root}/val/images/{name}"] = jpeg(5000 + 100 * c + i)
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    entries[f"{root}/val/val_annotations.txt"] = ("\n".join(annotations) + "\n").encode()
    return _zip(entries)
