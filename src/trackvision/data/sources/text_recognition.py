"""The thesis's text / no_text set: MSRA-TD500 train images (text) + Flickr8k photos (no text).

The same params always pick the same files: both lists are sorted, then sampled with the seed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trackvision.data.fetch import RemoteFile
from trackvision.data.images import IMAGE_SUFFIXES
from trackvision.data.sources import FetchContext, register_source
from trackvision.errors import ConfigError, DataError

# No checksum is published for MSRA-TD500: its sha256 is recorded in source.json instead.
# Alternative official location: http://pages.ucsd.edu/%7Eztu/publication/MSRA-TD500.zip
MSRA = RemoteFile("http://www.iapr-tc11.org/dataset/MSRA-TD500/MSRA-TD500.zip", "MSRA-TD500.zip")
FLICKR = RemoteFile(
    "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
    "Flickr8k_Dataset.zip",
    md5="f18a1e2920de5bd84dae7cf08ec78978",
)


@dataclass(frozen=True)
class TextRecognitionOptions:
    per_class: int = 200  # the thesis used 200 of each
    seed: int = 0

    def validate(self, key: str) -> None:
        if self.per_class < 1:
            raise ConfigError(f"{key}.per_class: must be >= 1, got {self.per_class}")


def _images(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)


def _pick(files: list[Path], n: int, rng: np.random.Generator, what: str) -> list[Path]:
    if len(files) < n:
        raise DataError(f"{what}: found {len(files)} images, data.text_recognition.per_class={n}")
    return [files[i] for i in sorted(rng.choice(len(files), n, replace=False))]


@register_source("text_recognition", options=TextRecognitionOptions, channels=3)
def fetch_text_recognition(
    out_dir: Path, options: TextRecognitionOptions, context: FetchContext
) -> dict[str, Any]:
    """The thesis's set: MSRA-TD500 train images as text, random Flickr8k photos as no_text."""
    msra_dir, msra_sha = context.downloader.fetch_extracted(MSRA)
    flickr_dir, flickr_sha = context.downloader.fetch_extracted(FLICKR)
    rng = np.random.default_rng(options.seed)
    text = _pick(_images(msra_dir, "**/train/IMG_*"), options.per_class, rng, "MSRA-TD500 train/")
    no_text = _pick(
        _images(flickr_dir, "Flicker8k_Dataset/*"),
        options.per_class,
        rng,
        "Flickr8k Flicker8k_Dataset/",
    )
    for label, files in (("text", text), ("no_text", no_text)):
        (out_dir / label).mkdir(parents=True)
        for path in files:
            shutil.copyfile(path, out_dir / label / path.name)
    return {
        "images": 2 * options.per_class,
        "classes": ["no_text", "text"],
        "archives": {
            MSRA.name: {"sha256": msra_sha},
            FLICKR.name: {"sha256": flickr_sha, "md5": FLICKR.md5},
        },
        "picked": {"text": [p.name for p in text], "no_text": [p.name for p in no_text]},
    }
