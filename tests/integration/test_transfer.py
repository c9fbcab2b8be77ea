"""Transfer learning as the thesis meant it: the embedded ImageNet EfficientNet-Lite0, fully
fine-tuned with the default params (fewer epochs, photos and copies, to fit the suite), tells 256-px
photos with text from photos without, at its own 224-px resolution (decoded large enough)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.conftest import run_data_stages
from trackvision.config import parse_config
from trackvision.data.sources.synthetic_text import generate_image
from trackvision.layout import Layout
from trackvision.stages.evaluate import evaluate
from trackvision.stages.train import train

MODEL = "tf_efficientnet_lite0"


def _gallery(root: Path, n: int = 240, side: int = 256) -> None:
    """Photos with and without text: varied fonts, sizes, colours, rotations and backgrounds."""
    for i in range(n):
        label = "text" if i % 2 else "no_text"
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        generate_image(2024, i, side, bool(i % 2)).save(folder / f"IMG_{i:04d}.jpg", quality=90)


def test_embedded_pretrained_model_fine_tunes_at_its_own_resolution(
    tmp_path, params, record_property
) -> None:
    _gallery(tmp_path / "photos")
    p = dict(params)
    p["data"] = {**params["data"], "source": "folder"}
    p["data"]["folder"] = {**params["data"]["folder"], "path": str(tmp_path / "photos")}
    p["train"] = {**params["train"], "models": [MODEL], "epochs": 2}
    p["augment"] = {**params["augment"], "copies": 0}
    p["models"] = {MODEL: {"pretrained": "embedded"}}
    p["mlflow"] = {**params["mlflow"], "enabled": False}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    config, layout = parse_config(p), Layout(tmp_path)
    assert config.model(MODEL).train.image_size == 224 and config.decode_size == 224
    run_data_stages(config, layout)
    train(config, layout, MODEL)
    metrics = evaluate(config, layout, MODEL)
    preprocessing = json.loads((layout.model_dir(MODEL) / "preprocessing.json").read_text())
    assert preprocessing["input_size"] == [3, 224, 224]
    record_property("test_accuracy", metrics["accuracy"])  # in the JUnit report, for the record
    assert metrics["accuracy"] >= 0.93, metrics
