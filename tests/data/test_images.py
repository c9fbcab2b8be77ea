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


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (b"not an image at all", "not an image Pillow can read"),
        ("truncated", "truncated: the file ends before the image data does"),
    ],
)
def test_unreadable_files_give_the_path_and_a_plain_reason(
    tmp_path: Path, content, reason: str
) -> None:
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        Image.new("RGB", (64, 64), (1, 2, 3)).save(path, quality=90)
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError) as caught:
        load_image(path, channels=3)
    assert caught.value.reason.startswith(reason)
    assert str(caught.value).startswith(f"{path}: ")
    assert "object at 0x" not in str(caught.value) and "BytesIO" not in str(caught.value)


def test_decompression_bomb_guard_stays_on(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    with pytest.raises(ImageDecodeError, match="too large: over Pillow's decompression-bomb limit"):
        load_image(path, channels=1, data=path.read_bytes())


def _photo(path: Path, side: int) -> None:
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((side * 4 // 3, side), Image.Resampling.BICUBIC).save(
        path, quality=92
    )


def test_large_jpegs_are_drafted_by_the_decoder(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "photo.jpg"
    _photo(path, 1536)
    sizes = []
    original_load = Image.Image.load

    def spy(self):
        out = original_load(self)
        sizes.append(self.size)
        return out

    monkeypatch.setattr(Image.Image, "load", spy)
    small = load_image(path, channels=3, size=64)
    assert small.shape == (64, 64, 3)
    # 2048 x 1536 drafted to an eighth (256 x 192): at least twice the 64 px asked for.
    assert sizes[0] == (256, 192), sizes
    monkeypatch.setattr(Image.Image, "load", original_load)
    full = np.asarray(
        Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.BICUBIC), dtype=float
    )
    assert np.abs(small.astype(float) - full).mean() < 3.0  # the same picture, properly scaled


def test_small_images_and_pngs_are_not_drafted(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    _photo(path, 96)
    with Image.open(path) as img:
        expected = np.asarray(img.convert("RGB").resize((64, 64), Image.Resampling.BICUBIC))
    assert (load_image(path, channels=3, size=64) == expected).all()
