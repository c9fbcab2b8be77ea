"""Decode image files into uint8 arrays: EXIF orientation, colour modes, corrupt-file detection.

A JPEG needed much smaller than it is stored is decoded at reduced size by the decoder itself
(Pillow's draft mode scales by 1/2, 1/4 or 1/8 inside the DCT), so a 12 MP phone photo wanted at
224 px costs a fraction of a full decode. The draft never goes below twice the wanted side, and the
final resize is the same bicubic one, so only large photos take this path and their result stays
a proper downscale.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


class ImageDecodeError(Exception):
    """A file that is not a readable image; ``reason`` says why in plain words."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


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
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def _reason(exc: Exception, data: bytes | None, path: Path) -> str:
    """A plain explanation of why Pillow could not read a file (never an object repr)."""
    size = len(data) if data is not None else (path.stat().st_size if path.is_file() else -1)
    if size == 0:
        return "empty file (0 bytes)"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read (unknown or damaged file header)"
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, EOFError) or any(
        marker in lowered for marker in ("truncated", "broken data stream", "premature end")
    ):
        return "truncated: the file ends before the image data does"
    return f"damaged image data ({type(exc).__name__}: {text.splitlines()[0][:200]})"


def _draft(img: Image.Image, channels: int, size: int | None) -> None:
    """Let the JPEG decoder scale down on its own to no less than twice ``size``."""
    if size is not None and img.format == "JPEG":
        img.draft("L" if channels == 1 else "RGB", (2 * size, 2 * size))


def load_image(
    path: Path, channels: int, size: int | None = None, data: bytes | None = None
) -> np.ndarray:
    """Decode ``path`` to an HxWxC uint8 array, upright per EXIF, resized to ``size`` x ``size``.

    ``data``: the file's bytes when the caller has read them already (saves a second read).
    Raises ImageDecodeError naming ``path`` and a plain reason. Pillow's decompression-bomb guard
    stays on: an image over ``Image.MAX_IMAGE_PIXELS`` is refused before it is decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data) if data is not None else path) as img:
                _draft(img, channels, size)
                img.load()  # force a full decode: truncated files fail here, not later
                ImageOps.exif_transpose(img, in_place=True)
                img = _to_mode(img, channels)
                if size is not None and img.size != (size, size):
                    img = img.resize((size, size), Image.Resampling.BICUBIC)
                arr = np.asarray(img, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(
            path,
            f"too large: over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} "
            "pixels",
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(path, _reason(exc, data, Path(path))) from exc
    return arr[..., None] if arr.ndim == 2 else arr


def encode_png(image: np.ndarray) -> bytes:
    """An H x W x C uint8 array (C = 1 or 3) as PNG bytes: lossless, so it decodes back exactly."""
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()
