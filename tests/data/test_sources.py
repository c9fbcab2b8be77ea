"""Embedded sources: deterministic, real files by class, a task that is not trivially separable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from trackvision.data.fetch import Downloader
from trackvision.data.rawset import read_raw
from trackvision.data.sources import FetchContext, available_sources, get_source, parse_options
from trackvision.data.sources.synthetic_text import generate_image
from trackvision.errors import ConfigError

# Embedded sources never download: a cache folder that cannot exist proves it.
CTX = FetchContext(Downloader(cache_dir=Path("/nonexistent/cache")), Path("/nonexistent"))


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_registry_lists_the_embedded_sources() -> None:
    assert {"synthetic_text", "digits"} <= set(available_sources())
    with pytest.raises(ConfigError, match="unknown source 'nope'"):
        get_source("nope")


def _labels(raw: Path) -> list[str]:
    _classes, items = read_raw(raw)
    return [item.label for item in items]


def test_synthetic_text_is_seeded_and_written_as_one_pack(tmp_path: Path) -> None:
    source = get_source("synthetic_text")
    opts = parse_options(source, {"count": 24, "size": 32, "seed": 3})
    source.fetch(tmp_path / "a", opts, CTX)
    source.fetch(tmp_path / "b", opts, CTX)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "classes.json",
        "index.csv",
        "pack.bin",
    ]
    assert _labels(tmp_path / "a").count("text") == 12
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    other = parse_options(source, {"count": 24, "size": 32, "seed": 4})
    source.fetch(tmp_path / "c", other, CTX)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_synthetic_text_fraction_makes_imbalance(tmp_path: Path) -> None:
    source = get_source("synthetic_text")
    opts = parse_options(source, {"count": 40, "size": 32, "text_fraction": 0.25})
    source.fetch(tmp_path, opts, CTX)
    labels = _labels(tmp_path)
    assert labels.count("text") == 10 and labels.count("no_text") == 30


def test_digits_source_writes_ten_grey_classes(tmp_path: Path) -> None:
    source = get_source("digits")
    summary = source.fetch(tmp_path, parse_options(source, {"size": 16}), CTX)
    assert summary["images"] == 1797
    assert sorted(p.name for p in tmp_path.iterdir()) == [str(d) for d in range(10)]
    assert source.channels == 1


def test_logistic_regression_on_raw_pixels_stays_below_070() -> None:
    """The generator must need real features: a linear model on 32-px pixels stays weak."""
    n = 1000
    labels = np.arange(n) % 2
    pixels = np.stack(
        [
            np.asarray(
                generate_image(0, i, 64, bool(labels[i])).resize((32, 32)), np.float32
            ).ravel()
            / 255
            for i in range(n)
        ]
    )
    train, test = slice(0, 700), slice(700, n)
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(pixels[train], labels[train])
    accuracy = clf.score(pixels[test], labels[test])
    assert accuracy < 0.70, f"raw-pixel logistic regression reached {accuracy:.3f}"


def test_text_stays_mostly_in_the_frame() -> None:
    """A word group overhangs the frame by at most 20%, or shows a window onto it if it is wider."""
    from trackvision.data.sources.synthetic_text import _offset

    rng = np.random.default_rng(0)
    for extent in (10, 40, 64, 90):
        starts = [_offset(rng, extent, 64) for _ in range(500)]
        visible = [min(64, s + extent) - max(0, s) for s in starts]
        assert min(visible) >= min(extent, 64) * 0.8 - 1, (extent, min(visible))


def test_text_colour_contrasts_in_brightness_with_what_it_covers() -> None:
    from trackvision.data.sources.synthetic_text import _LUMA, _contrasting

    rng = np.random.default_rng(1)
    for _ in range(200):
        under = rng.uniform(0, 255, (50, 3)) * rng.uniform(0, 1) + rng.uniform(0, 128)
        colour = np.array(_contrasting(rng, under), float)
        contrast = np.abs(under @ _LUMA - colour @ _LUMA)
        assert np.median(contrast) > 50, (colour, under.mean(0))


def test_text_images_show_their_text() -> None:
    """On a flat ground, drawing text changes many pixels, clearly (no hidden, off-frame text)."""
    from PIL import Image

    from trackvision.data.sources.synthetic_text import _LUMA, _draw_text

    for i in range(100):
        rng = np.random.default_rng(i)
        ground = tuple(int(v) for v in rng.integers(0, 256, 3))
        img = Image.new("RGB", (64, 64), ground)
        _draw_text(rng, img)
        luma_change = np.abs((np.asarray(img, float) - np.array(ground, float)) @ _LUMA)
        assert (luma_change > 50).sum() >= 40, f"image {i}: text barely visible"
