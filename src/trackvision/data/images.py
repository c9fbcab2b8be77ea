"""Decode image files into uint8 arrays: EXIF orientation, colour modes, corrupt-file detection."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


class ImageDecodeError(Exception):
    """A file that is not a readable image (corrupt, truncated, or not an image at all)."""


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to 'L' (channels=1) or 'RGB' (channels=3)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit greyscale: scale the full range down to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        arr = arr * (255.0 / hi) if hi > 255 else arr
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels become white, as an image viewer shows them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def load_image(
    path: Path, channels: int, size: int | None = None, data: bytes | None = None
) -> np.ndarray:
    """Decode ``path`` to an HxWxC uint8 array, upright per EXIF, resized to ``size`` x ``size``.

    ``data``: the file's bytes when the caller has read them already (saves a second read).
    Raises ImageDecodeError for unreadable files. Pillow's decompression-bomb guard stays on.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data) if data is not None else path) as img:
                img.load()  # force a full decode: truncated files fail here, not later
                img = ImageOps.exif_transpose(img) or img
                img = _to_mode(img, channels)
                if size is not None and img.size != (size, size):
                    img = img.resize((size, size), Image.Resampling.BICUBIC)
                arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{path}: {exc}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"{path}: refused as a decompression bomb ({exc})") from exc
    return arr[..., None] if arr.ndim == 2 else arr
