"""Downloaded sources against look-alike archives served on 127.0.0.1, and the folder source."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import struct
from pathlib import Path

import pytest
from PIL import Image

from tests.data import fake_archives as fake
from tests.loopback import Served, serve
from trackvision.data.balance import build_balanced_set
from trackvision.data.fetch import Downloader, RemoteFile
from trackvision.data.rawset import read_raw
from trackvision.data.sources import FetchContext, get_source, parse_options
from trackvision.data.sources import fashion_mnist as fm
from trackvision.data.sources import text_recognition as tr
from trackvision.data.sources import tiny_imagenet as ti
from trackvision.errors import DataError


@pytest.fixture
def server():
    msra, flickr = fake.msra_td500(), fake.flickr8k()
    files = {
        **fake.fashion_mnist(),
        "MSRA-TD500.zip": msra,
        "Flickr8k_Dataset.zip": flickr,
        "tiny-imagenet-200.zip": fake.tiny_imagenet(),
    }
    with serve(Served(files=files)) as srv:
        yield srv


@pytest.fixture
def published_md5s(monkeypatch, server):
    """The look-alike files stand in for the real ones: their MD5s replace the published ones."""
    files = server.files
    monkeypatch.setattr(fm, "FILES", {name: fake.md5(files[name]) for name in fm.FILES})
    monkeypatch.setattr(
        tr,
        "FLICKR",
        RemoteFile(tr.FLICKR.url, tr.FLICKR.name, fake.md5(files["Flickr8k_Dataset.zip"])),
    )
    monkeypatch.setattr(
        ti,
        "ARCHIVE",
        RemoteFile(ti.ARCHIVE.url, ti.ARCHIVE.name, fake.md5(files["tiny-imagenet-200.zip"])),
    )


def _balance(raw: Path, ratios: dict[str, float], **kwargs):
    defaults = {"channels": 3, "image_size": 16, "strategy": "none", "seed": 0, "min_per_class": 1}
    return build_balanced_set(raw, ratios=ratios, **{**defaults, **kwargs})


def _context(tmp_path: Path, url: str) -> FetchContext:
    return FetchContext(Downloader(tmp_path / "cache", mirror=url, backoff=0.01), tmp_path)


def _fetch(name: str, options: dict, tmp_path: Path, url: str, out: str = "out") -> dict:
    source = get_source(name)
    return source.fetch(tmp_path / out, parse_options(source, options), _context(tmp_path, url))


def test_fashion_mnist_keeps_the_official_split_with_class_names(
    tmp_path, server, published_md5s
) -> None:
    summary = _fetch("fashion_mnist", {}, tmp_path, server.url)
    assert summary["counts"]["train"]["Ankle_boot"] == 4 and summary["counts"]["test"]["Bag"] == 2
    # Packed: three files, whatever the number of images.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "classes.json",
        "index.csv",
        "pack.bin",
    ]
    classes, items = read_raw(tmp_path / "out")
    shirts = [i for i in items if i.label == "T-shirt_top" and i.split == "train"]
    assert len(shirts) == 4 and len(items) == 60 and classes == sorted(fm.CLASSES)
    img = Image.open(io.BytesIO(shirts[0].read()))
    assert img.size == (28, 28) and img.mode == "L"
    assert shirts[0].shown_as.endswith("out/train/T-shirt_top/00000.png")


def test_fashion_mnist_published_checksum_is_enforced(tmp_path, server) -> None:
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: checksum mismatch"):
        _fetch("fashion_mnist", {}, tmp_path, server.url)


def test_idx_with_a_bad_magic_number_is_rejected(tmp_path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(struct.pack(">II", 1234, 0)))
    with pytest.raises(DataError, match="bad IDX magic number 1234"):
        fm.read_idx(path)
    path.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 2, 28, 28) + b"\0" * 100))
    with pytest.raises(DataError, match="header says 1568 bytes"):
        fm.read_idx(path)


def test_text_recognition_picks_the_same_files_for_the_same_params(
    tmp_path, server, published_md5s
) -> None:
    a = _fetch("text_recognition", {"per_class": 5, "seed": 1}, tmp_path, server.url, "a")
    b = _fetch("text_recognition", {"per_class": 5, "seed": 1}, tmp_path, server.url, "b")
    c = _fetch("text_recognition", {"per_class": 5, "seed": 2}, tmp_path, server.url, "c")
    assert a["picked"] == b["picked"] != c["picked"]
    assert all(name.startswith("IMG_0") and int(name[4:8]) < 500 for name in a["picked"]["text"])
    assert len(list((tmp_path / "a" / "no_text").glob("*.jpg"))) == 5
    assert len(a["archives"]["MSRA-TD500.zip"]["sha256"]) == 64  # no published checksum: recorded
    # Each archive was downloaded once and extracted once, then reused from the cache.
    assert [n for n, _ in server.requests].count("MSRA-TD500.zip") == 1


def test_text_recognition_asking_for_more_than_there_is(tmp_path, server, published_md5s) -> None:
    with pytest.raises(DataError, match=r"MSRA-TD500 train/: found 12 images.*per_class=50"):
        _fetch("text_recognition", {"per_class": 50}, tmp_path, server.url)


def test_tiny_imagenet_names_val_mapping_and_subset(tmp_path, server, published_md5s) -> None:
    summary = _fetch(
        "tiny_imagenet",
        {"classes": ["goldfish", "n01641577"], "per_class": 4},
        tmp_path,
        server.url,
    )
    assert summary["classes"] == ["goldfish", "bullfrog"]
    assert summary["counts"] == {
        "train": {"goldfish": 4, "bullfrog": 4},
        "test": {"goldfish": 2, "bullfrog": 2},
    }
    _, items = read_raw(tmp_path / "out")
    (val_4,) = [i for i in items if i.shown_as.endswith("test/bullfrog/val_4.JPEG")]
    assert val_4.split == "test" and val_4.read() == fake.jpeg(5000 + 100 * 2 + 0)


def test_presplit_balance_keeps_the_given_test_split(tmp_path, server, published_md5s) -> None:
    _fetch("tiny_imagenet", {}, tmp_path, server.url)
    result = _balance(tmp_path / "out", {"train": 0.5, "val": 0.25, "test": 0.25}, presplit=True)
    test_paths = {r["path"] for r in result.manifest if r["split"] == "test"}
    assert len(test_paths) == 6 and all("/test/" in p for p in test_paths)
    train_val = [r for r in result.manifest if r["split"] != "test"]
    assert all("/train/" in r["path"] for r in train_val)
    assert sum(r["split"] == "val" for r in train_val) == 3 * 2  # a third of 6 per class


def _save(path: Path, data: bytes | Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        data.save(path)


def _gallery(user: Path) -> None:
    for i in range(4):
        _save(user / "cats" / f"c{i}.jpg", fake.jpeg(i))
        _save(user / "dogs" / "2024" / "trip" / f"d{i}.jpg", fake.jpeg(10 + i))
    _save(user / "dogs" / "d0.jpg", fake.jpeg(99))  # same name as a nested one: both kept
    _save(user / "cats" / "cmyk.jpg", fake.jpeg(50, mode="CMYK"))
    _save(user / "cats" / "broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
    _save(user / "cats" / "empty.png", b"")
    _save(user / "cats" / "notes.txt", b"not an image")
    _save(user / "cats" / "renamed.png", b"GIF89a? no, a text file")
    _save(user / "dogs" / "Thumbs.db", b"\0\0")


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


def test_folder_source_reads_the_gallery_in_place(tmp_path) -> None:
    user = tmp_path / "photos"
    _gallery(user)
    before = _tree(user)
    summary = _fetch("folder", {"path": "photos"}, tmp_path, "")
    assert summary["counts"] == {"cats": 8, "dogs": 5}
    assert summary["ignored_not_images"] == 2
    # Nothing copied: the raw folder holds the manifest of what was found, not the photos.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["classes.json", "manifest.csv"]
    rows = (tmp_path / "out" / "manifest.csv").read_text().splitlines()
    assert rows[0] == "path,label,size,sha256" and len(rows) == 14
    assert any(r.startswith(f"{user}/cats/c0.jpg,cats,{len(fake.jpeg(0))},") for r in rows)

    ratios = {"train": 0.6, "val": 0.2, "test": 0.2}
    result = _balance(tmp_path / "out", ratios, min_per_class=2, relative_to=tmp_path)
    # Skipped files are named by the user's own path, with a plain reason.
    assert {(s["path"], s["reason"].split(":")[0]) for s in result.report["skipped"]} == {
        (f"{user}/cats/broken.jpg", "truncated"),  # a JPEG header, then nothing of an image
        (f"{user}/cats/empty.png", "empty file (0 bytes)"),
        (
            f"{user}/cats/renamed.png",
            "not an image Pillow can read (unknown or damaged file header)",
        ),
    }
    assert any(r["path"] == f"{user}/cats/cmyk.jpg" for r in result.manifest)  # CMYK decoded
    assert sum(len(s) for s in result.splits.values()) == 10
    assert _tree(user) == before  # the user's files are never modified


def test_a_photo_changed_after_listing_is_refused(tmp_path) -> None:
    user = tmp_path / "photos"
    _gallery(user)
    _fetch("folder", {"path": "photos"}, tmp_path, "")
    _save(user / "cats" / "c1.jpg", fake.jpeg(77))
    with pytest.raises(DataError, match=r"photos/cats/c1\.jpg: changed since the download stage"):
        _balance(tmp_path / "out", {"train": 0.6, "val": 0.2, "test": 0.2}, min_per_class=2)


def test_the_same_picture_under_two_classes_is_a_label_conflict(tmp_path) -> None:
    user = tmp_path / "photos"
    _gallery(user)
    _save(user / "dogs" / "looks_like_a_cat.jpg", fake.jpeg(2))  # = cats/c2.jpg
    _fetch("folder", {"path": "photos"}, tmp_path, "")
    result = _balance(tmp_path / "out", {"train": 0.6, "val": 0.2, "test": 0.2}, min_per_class=2)
    assert result.report["conflicts"] == [
        {
            "paths": [f"{user}/cats/c2.jpg", f"{user}/dogs/looks_like_a_cat.jpg"],
            "labels": ["cats", "dogs"],
        }
    ]
    kept = {r["path"] for r in result.manifest}
    assert f"{user}/cats/c2.jpg" not in kept and f"{user}/dogs/looks_like_a_cat.jpg" not in kept
    from trackvision import doctor

    (finding,) = doctor.check_label_conflicts(result.report["conflicts"])
    assert finding.code == "label_conflict"
    assert f"{user}/cats/c2.jpg (cats) and {user}/dogs/looks_like_a_cat.jpg (dogs)" in (
        finding.message
    )


def test_folder_source_missing_path_is_clear(tmp_path) -> None:
    with pytest.raises(DataError, match=r"data\.folder\.path: .*nope is not a folder"):
        _fetch("folder", {"path": "nope"}, tmp_path, "")


def test_download_stage_records_archives_and_notices_changes(
    tmp_path, server, published_md5s, params, caplog
) -> None:
    from tests.conftest import tiny_params
    from trackvision.config import parse_config
    from trackvision.layout import Layout
    from trackvision.stages.download import download

    p = tiny_params(params, **{"data.source": "text_recognition"})
    p["data"]["text_recognition"] = {"per_class": 4, "seed": 0}
    p["download"].update(mirror=server.url, cache_dir=str(tmp_path / "cache"))
    config = parse_config(p)
    layout = Layout(tmp_path / "repo")
    download(config, layout)
    summary = json.loads((layout.raw("text_recognition") / "source.json").read_text())
    assert summary["source"] == "text_recognition" and summary["images"] == 8

    # The archive without a published checksum changes upstream: the next run says so.
    for cached in (tmp_path / "cache").iterdir():
        if cached.name.startswith("MSRA-TD500.zip"):
            shutil.rmtree(cached) if cached.is_dir() else cached.unlink()
    server.files["MSRA-TD500.zip"] = fake.msra_td500(n_train=13)
    with caplog.at_level("WARNING"):
        download(config, layout)
    assert "MSRA-TD500.zip changed since the last run" in caplog.text
