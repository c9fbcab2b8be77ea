"""Decoding: EXIF orientation, every colour mode, and unreadable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trackvision.data.images import ImageDecodeError, load_image


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    arr = load_image(path, channels=3)
    assert arr.shape == (40, 20, 3)  # upright: taller than wide
    assert arr[2, 10, 2] > 200  # the blue half is now on top


@pytest.mark.parametrize("mode", ["RGBA", "P", "CMYK", "L", "LA", "I;16", "1"])
def test_every_mode_becomes_rgb_or_grey(tmp_path: Path, mode: str) -> None:
    if mode == "I;16":
        img = Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16))
    else:
        img = Image.new("RGB", (16, 16), (200, 100, 50)).convert(mode)
    path = tmp_path / f"img_{mode.replace(';', '')}.{'tif' if mode in ('CMYK', 'I;16') else 'png'}"
    img.save(path)
    rgb = load_image(path, channels=3, size=8)
    grey = load_image(path, channels=1, size=8)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert grey.shape == (8, 8, 1) and grey.dtype == np.uint8
    if mode == "I;16":
        assert grey.max() == 255  # 16-bit range scaled down, not clipped


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    path = tmp_path / "clear.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert (load_image(path, channels=3) == 255).all()


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_unreadable_files_raise_decode_error(tmp_path: Path, content) -> None:
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        Image.new("RGB", (64, 64), (1, 2, 3)).save(path, quality=90)
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=r"bad\.jpg"):
        load_image(path, channels=3)


def test_decompression_bomb_guard_stays_on(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(path, channels=1)
