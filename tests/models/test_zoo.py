"""The model factory: own and timm models by name, clear errors, preprocessing from the model."""

from __future__ import annotations

import pytest
import torch

from trackvision.errors import ConfigError
from trackvision.models.preprocessing import Preprocessing, resolve_preprocessing
from trackvision.models.zoo import create_model, model_family


@pytest.mark.parametrize(
    ("name", "arch", "channels"),
    [
        ("cnn", {}, 3),
        ("cnn", {}, 1),
        ("vit", {"patch_size": 4, "dim": 32, "depth": 1, "heads": 2}, 3),
        ("mobilevit_xxs", {}, 3),
        ("mobilevit_xxs", {}, 1),  # greyscale into an RGB architecture
        ("resnet18", {}, 3),
    ],
)
def test_models_build_with_the_right_head(name, arch, channels) -> None:
    model = create_model(name, num_classes=5, in_chans=channels, image_size=32, arch=arch).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, 32, 32))
    assert out.shape == (2, 5)


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'mobilevit_xxz'.*mobilevit_xxs"):
        create_model("mobilevit_xxz", num_classes=2, in_chans=3, image_size=32)


def test_unknown_arch_option_is_named() -> None:
    with pytest.raises(ConfigError, match=r"models\.vit: unknown key\(s\) depht"):
        create_model("vit", num_classes=2, in_chans=3, image_size=32, arch={"depht": 2})


def test_bad_geometry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        create_model("vit", num_classes=2, in_chans=3, image_size=30, arch={"patch_size": 4})


def test_mobilevit_preprocessing_comes_from_its_config_not_imagenet() -> None:
    model = create_model("mobilevit_xxs", num_classes=2, in_chans=3, image_size=64)
    pre = resolve_preprocessing(model, model_family("mobilevit_xxs"), 3, 64)
    assert pre.mean == (0.0, 0.0, 0.0) and pre.std == (1.0, 1.0, 1.0)  # timm: inputs in [0, 1]
    assert pre.interpolation == "bicubic"
    x = pre(torch.full((1, 3, 32, 32), 255, dtype=torch.uint8))
    assert x.shape == (1, 3, 64, 64) and torch.allclose(x, torch.ones_like(x))


def test_resnet_preprocessing_is_imagenet_and_greyscale_averages() -> None:
    model = create_model("resnet18", num_classes=2, in_chans=1, image_size=32)
    pre = resolve_preprocessing(model, "timm", 1, 32)
    assert len(pre.mean) == 1
    assert pre.mean[0] == pytest.approx((0.485 + 0.456 + 0.406) / 3, abs=1e-3)


def test_preprocessing_round_trips_through_json(tmp_path) -> None:
    pre = Preprocessing((0.5,), (0.25,), (1, 16, 16), "bilinear", "test")
    pre.save(tmp_path / "p.json")
    assert Preprocessing.load(tmp_path / "p.json") == pre


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 224)])
@pytest.mark.parametrize(
    ("name", "arch"),
    [
        ("cnn", {}),
        ("vit", {"dim": 32, "depth": 1, "heads": 2}),
        ("mobilevit_xxs", {}),
        ("tf_efficientnet_lite0", {}),
    ],
)
def test_every_family_trains_a_step_on_fashion_and_photo_sizes(name, arch, channels, size) -> None:
    """28-px greyscale (Fashion-MNIST) and 224-px RGB (photos): forward, backward, a step."""
    if name == "vit":
        arch = {**arch, "patch_size": 4 if size == 28 else 16}
    model = create_model(name, num_classes=4, in_chans=channels, image_size=size, arch=arch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(2, channels, size, size), torch.tensor([0, 3])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
