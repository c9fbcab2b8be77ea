"""The doctor names each of the thesis's faults when it is made on purpose, and stays quiet
on clean data."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import tiny_params
from trackvision import doctor
from trackvision.config import parse_config
from trackvision.data.similarity import Rule
from trackvision.data.sources.synthetic_text import generate_image
from trackvision.errors import DataError
from trackvision.evaluation.confidence import bootstrap_f1_interval, weighted_f1
from trackvision.layout import Layout
from trackvision.stages.balance import balance
from trackvision.stages.download import download
from trackvision.stages.plan import plan


def _levels(findings) -> dict[str, str]:
    return {f.code: f.level for f in findings}


def test_an_image_in_two_splits_is_leakage() -> None:
    hashes = {"train": ["a", "b", "c"], "val": ["d"], "test": ["e", "b"]}
    paths = {"train": ["x/a.jpg", "x/b.jpg", "x/c.jpg"], "val": ["x/d.jpg"], "test": ["e", "b2"]}
    (finding,) = doctor.check_exact_leakage(hashes, paths)
    assert finding.level == "fail" and finding.code == "leakage.exact"
    assert finding.evidence["examples"] == [{"file": "x/b.jpg", "splits": ["test", "train"]}]
    assert (
        doctor.check_exact_leakage({"train": ["a"], "test": ["b"]}, {"train": ["1"], "test": ["2"]})
        == []
    )


def _decoded(image: Image.Image, size: int = 64) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))


def test_a_resized_re_encoded_copy_across_splits_is_a_near_duplicate() -> None:
    originals = [generate_image(5, i, 96, bool(i % 2)) for i in range(40)]
    train = np.stack([_decoded(im) for im in originals[:30]])
    test_images = [_decoded(im) for im in originals[30:]]
    clean = doctor.check_near_duplicates(
        {"train": train, "test": np.stack(test_images)},
        {"train": [f"t{i}" for i in range(30)], "test": [f"s{i}" for i in range(10)]},
        Rule(),
    )
    assert clean == []
    # Image 7 again, 1.5x larger and saved as a low-quality JPEG: a different file, same photo.
    big = originals[7].resize((144, 144), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=60)
    test_images[4] = _decoded(Image.open(io.BytesIO(buffer.getvalue())))
    (finding,) = doctor.check_near_duplicates(
        {"train": train, "test": np.stack(test_images)},
        {"train": [f"t{i}" for i in range(30)], "test": [f"s{i}" for i in range(10)]},
        Rule(),
    )
    assert finding.code == "leakage.near_duplicate" and finding.level == "warn"
    assert finding.evidence["pairs"] == 1
    assert finding.evidence["examples"][0]["train"] == "t7"
    assert finding.evidence["examples"][0]["test"] == "s4"


def test_a_model_that_always_says_one_class_has_collapsed() -> None:
    y_true = np.array([0, 1] * 50)
    (finding,) = doctor.check_collapse(y_true, np.ones(100, dtype=int), ["no_text", "text"])
    assert finding.code == "collapsed" and finding.level == "fail" and "'text'" in finding.message
    assert doctor.check_collapse(y_true, y_true, ["no_text", "text"]) == []


def test_swapped_labels_read_as_below_chance() -> None:
    rng = np.random.default_rng(0)
    y_true = np.array([0, 1] * 300)
    right = rng.random(600) < 0.45  # the thesis's 47% on balanced classes, a bit worse
    swapped = np.where(right, y_true, 1 - y_true)
    (finding,) = doctor.check_below_chance(y_true, swapped)
    assert finding.code == "below_chance" and finding.level == "fail"
    assert "labels, class order or preprocessing are probably wrong" in finding.message
    assert finding.evidence["p_value"] < 0.01
    # Chance-level accuracy (exactly half right) is bad, but not evidence of a wiring fault.
    coin = np.where(np.arange(600) % 4 < 2, y_true, 1 - y_true)
    assert (coin == y_true).mean() == 0.5
    assert doctor.check_below_chance(y_true, coin) == []


def test_imagenet_statistics_fed_to_a_zero_one_model_are_a_mismatch() -> None:
    imagenet = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    mobilevit = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # timm's config for MobileViT
    (finding,) = doctor.check_preprocessing(imagenet, mobilevit)
    assert finding.code == "preprocessing.mismatch" and finding.level == "fail"
    assert finding.evidence["mean"]["expected"] == [0.0, 0.0, 0.0]
    assert doctor.check_preprocessing(mobilevit, mobilevit) == []
    assert doctor.check_preprocessing(imagenet, None) == []  # from scratch: nothing to match


def test_pixels_left_in_0_255_are_out_of_range() -> None:
    raw = np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8)).astype(np.float32)
    (finding,) = doctor.check_batch_range(raw, (0.0,) * 3, (1.0,) * 3)
    assert finding.code == "preprocessing.range"
    assert doctor.check_batch_range(raw / 255, (0.0,) * 3, (1.0,) * 3) == []
    overshoot = np.array([-0.06, 1.06])  # bicubic resizing of [0, 1] pixels: not a fault
    assert doctor.check_batch_range(overshoot, (0.0,) * 3, (1.0,) * 3) == []
    imagenet_mean, imagenet_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    once = (raw / 255 - 0.45) / 0.226
    twice = (once - 0.45) / 0.226  # normalised twice
    assert doctor.check_batch_range(once, imagenet_mean, imagenet_std) == []
    assert doctor.check_batch_range(twice, imagenet_mean, imagenet_std)


def test_a_perfect_score_on_20_images_is_too_good_to_trust() -> None:
    (finding,) = doctor.check_too_good(20, 20)
    assert finding.level == "warn" and "[0.839, 1.0]" in finding.message
    assert doctor.check_too_good(19, 20) == []
    history = [{"train_accuracy": 1.0, "val_accuracy": 1.0}]
    assert _levels(doctor.check_fit(history, n_val=20, n_train=60)) == {"too_good.val": "warn"}
    memorised = [{"train_accuracy": 1.0, "val_accuracy": 0.7}]
    assert _levels(doctor.check_fit(memorised, n_val=200, n_train=60)) == {"memorisation": "warn"}


def test_imbalance_beyond_what_the_strategy_allows() -> None:
    (finding,) = doctor.check_imbalance({"a": 50, "b": 30}, "undersample")
    assert finding.level == "fail"
    assert doctor.check_imbalance({"a": 50, "b": 50}, "undersample") == []
    assert _levels(doctor.check_imbalance({"a": 90, "b": 30}, "none")) == {"imbalance": "warn"}


def test_strict_turns_a_fail_into_a_failed_stage(tmp_path) -> None:
    failing = [doctor.Finding("collapsed", "fail", "one class only")]
    doctor.enforce(failing, strict=False, stage="evaluate", where=tmp_path)
    with pytest.raises(DataError, match=r"doctor \(evaluate\).*one class only.*strict"):
        doctor.enforce(failing, strict=True, stage="evaluate", where=tmp_path)
    doctor.enforce([doctor.Finding("x", "warn", "w")], strict=True, stage="e", where=tmp_path)


@pytest.mark.parametrize("group", [False, True])
def test_balance_groups_copies_in_the_raw_folder_or_reports_them(
    tmp_path: Path, params, group: bool
) -> None:
    """A folder source with resized copies of its own photos: balance keeps each photo and its
    copy in one split (group_near_copies: true), or splits them and the doctor finds them."""
    photos = tmp_path / "photos"
    for label in ("cat", "dog"):
        (photos / label).mkdir(parents=True)
    for i in range(30):
        label = ("cat", "dog")[i % 2]
        image = generate_image(9, i, 96, bool(i % 2))
        image.save(photos / label / f"{i:03d}.jpg", quality=92)
        if i < 12:  # a resized, re-encoded copy of the same photo
            image.resize((120, 120)).save(photos / label / f"{i:03d}_copy.jpg", quality=70)
    p = tiny_params(
        params,
        **{"data.source": "folder", "data.min_per_class": 5, "balance.group_near_copies": group},
    )
    p["data"]["folder"]["path"] = str(photos)
    config, layout = parse_config(p), Layout(tmp_path)
    download(config, layout)
    plan(config, layout)
    report = balance(config, layout)
    found = {f["code"]: f for f in report["doctor"]["findings"]}
    if group:
        assert report["doctor"]["status"] == "ok", report["doctor"]
        assert report["near_copy_groups"]["groups"] == 12
        assert report["near_copy_groups"]["broken"] == 0
    else:
        assert "leakage.near_duplicate" in found, report["doctor"]
        assert report["doctor"]["status"] == "warn"
        assert "near_copy_groups" not in report
    saved = json.loads(layout.balance_report.read_text())
    assert saved["doctor"] == report["doctor"]


def test_the_bootstrap_f1_interval_brackets_the_point_estimate() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 3, 400)
    y_pred = np.where(rng.random(400) < 0.8, y_true, rng.integers(0, 3, 400))
    low, high = bootstrap_f1_interval(y_true, y_pred, 3)
    point = f1_score(y_true, y_pred, average="weighted")
    assert low < point < high and high - low < 0.15
    # Each resample is scored as scikit-learn scores it, absent classes included.
    idx = np.random.default_rng(0).integers(0, 400, (5, 400))
    scores = weighted_f1(y_true[idx], np.where(idx % 7 == 0, 4, y_pred[idx]), 5)
    for row, score in zip(idx, scores, strict=True):
        pred = np.where(row % 7 == 0, 4, y_pred[row])
        expected = f1_score(y_true[row], pred, labels=range(5), average="weighted", zero_division=0)
        assert score == pytest.approx(expected, abs=1e-12)
