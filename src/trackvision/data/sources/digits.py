"""scikit-learn's handwritten digits (1,797 images of 8x8 px, 10 classes), shipped offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from trackvision.data.sources import FetchContext, register_source
from trackvision.errors import ConfigError


@dataclass(frozen=True)
class DigitsOptions:
    size: int = 32  # written image side in px (the originals are 8x8)

    def validate(self, key: str) -> None:
        if not 8 <= self.size <= 512:
            raise ConfigError(f"{key}.size: must be 8..512 px, got {self.size}")


@register_source("digits", options=DigitsOptions, channels=1)
def fetch_digits(out_dir: Path, options: DigitsOptions, context: FetchContext) -> dict[str, Any]:
    """scikit-learn's 8x8 handwritten digits, upscaled and written as greyscale PNGs."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # The originals hold 0..16; stretch to the full 8-bit range before upscaling.
    pixels = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    for i, (image, label) in enumerate(
        tqdm(zip(pixels, bunch.target, strict=True), total=len(pixels), desc="digits", disable=None)
    ):
        cls_dir = out_dir / str(int(label))
        cls_dir.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(image, mode="L").resize(
            (options.size, options.size), Image.Resampling.BICUBIC
        )
        img.save(cls_dir / f"digit_{i:04d}.png")
    return {"images": len(pixels), "classes": sorted(str(c) for c in set(bunch.target))}
