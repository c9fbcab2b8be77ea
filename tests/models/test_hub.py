"""``pretrained: hub`` for real: timm downloads a checkpoint from a hub served on 127.0.0.1
(``HF_ENDPOINT``), caches it, and the model trains at its pretrained resolution."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from tests.models.hub_server import serve_hub

# A subprocess against a loopback hub server: not in make test-fast.
pytestmark = pytest.mark.integration

REPO_ID = "timm/mobilevit_xxs.cvnets_in1k"  # the thesis's model, as timm names its weights

LOAD = """
import json, sys, torch
from trackvision.models.zoo import create_model
from trackvision.models.preprocessing import resolve_preprocessing
model = create_model("mobilevit_xxs", num_classes=2, in_chans=3, image_size=256, pretrained="hub")
pre = resolve_preprocessing(model, "timm", 3, 256)
stem = model.stem.conv.weight.detach()
json.dump({"stem_sum": float(stem.double().sum()), "mean": pre.mean, "std": pre.std,
           "interpolation": pre.interpolation, "source": pre.source,
           "head_max": float(model.head.fc.weight.abs().max())}, sys.stdout)
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    state = timm.create_model("mobilevit_xxs", pretrained=False).state_dict()
    return {k: v.contiguous() for k, v in state.items()}


def _load(env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", LOAD],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_hub_weights_come_through_timms_download_path_and_cache(tmp_path, checkpoint) -> None:
    path = tmp_path / "model.safetensors"
    save_file(checkpoint, str(path))
    with serve_hub({f"{REPO_ID}/model.safetensors": path.read_bytes()}) as hub:
        env = {
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        first = _load(env)
        fetched = [p for m, p in hub.requests if m == "GET" and "/resolve/" in p]
    expected = float(load_file(str(path))["stem.conv.weight"].double().sum())
    assert first["stem_sum"] == pytest.approx(expected, rel=1e-12)  # the served weights
    assert fetched == [f"/{REPO_ID}/resolve/main/model.safetensors"]
    # timm's own preprocessing for MobileViT: [0, 1] inputs, no ImageNet statistics.
    assert first["mean"] == [0.0, 0.0, 0.0] and first["std"] == [1.0, 1.0, 1.0]
    assert "native input (3, 256, 256)" in first["source"]
    assert first["head_max"] < 0.1  # a new 2-class head, started small
    cached = list((tmp_path / "hf" / "hub").glob("models--timm--mobilevit_xxs.cvnets_in1k/*"))
    assert cached, "the download landed in the hub cache"
    # Offline, the same call is served from the cache: no hub needed.
    again = _load({"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert again["stem_sum"] == first["stem_sum"]


def test_a_pretrained_model_trains_at_its_own_resolution(params) -> None:
    from tests.conftest import tiny_params
    from trackvision.config import parse_config

    p = tiny_params(params, **{"train.models": ["cnn", "mobilevit_xxs", "tf_efficientnet_lite0"]})
    p["models"]["mobilevit_xxs"] = {"pretrained": "hub"}
    p["models"]["tf_efficientnet_lite0"] = {"pretrained": "embedded"}
    config = parse_config(p)
    assert config.model("cnn").train.image_size == 32  # train.image_size
    assert config.model("mobilevit_xxs").train.image_size == 256  # its pretrained config
    assert config.model("tf_efficientnet_lite0").train.image_size == 224
    assert config.decode_size == 256  # decoded large enough for the largest input
    p["models"]["mobilevit_xxs"]["image_size"] = 128  # an explicit size wins
    p["train"]["models"] = ["cnn", "mobilevit_xxs"]
    config = parse_config(p)
    assert config.model("mobilevit_xxs").train.image_size == 128 and config.decode_size == 128
    p["train"]["models"] = ["cnn"]
    assert parse_config(p).decode_size == 32  # no pretrained model: data.image_size
