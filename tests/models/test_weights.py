"""Pretrained weights that work offline (embedded) and from files, loaded without unpickling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_sample_image

from trackvision.errors import ConfigError
from trackvision.models.preprocessing import resolve_preprocessing
from trackvision.models.zoo import create_model


def _imagenet_class(model: torch.nn.Module, photo: str) -> int:
    pre = resolve_preprocessing(model, "timm", 3, 224)
    pixels = torch.from_numpy(np.array(load_sample_image(photo))).permute(2, 0, 1)
    with torch.no_grad():
        return int(model.eval()(pre(pixels[None])).argmax())


def test_embedded_weights_recognise_the_sample_photos() -> None:
    """The package's 296 tensors map in order onto timm's tf_efficientnet_lite0 (FACTS.md)."""
    model = create_model(
        "tf_efficientnet_lite0", num_classes=1000, in_chans=3, image_size=224, pretrained="embedded"
    )
    pre = resolve_preprocessing(model, "timm", 3, 224)
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)  # from timm's config
    assert _imagenet_class(model, "china.jpg") == 442  # bell cote
    assert _imagenet_class(model, "flower.jpg") == 985  # daisy


def test_embedded_weights_with_a_new_head_and_greyscale_input() -> None:
    model = create_model(
        "tf_efficientnet_lite0", num_classes=2, in_chans=1, image_size=64, pretrained="embedded"
    )
    reference = create_model(
        "tf_efficientnet_lite0", num_classes=1000, in_chans=3, image_size=64, pretrained="embedded"
    )
    stem = reference.state_dict()["conv_stem.weight"].sum(1, keepdim=True)
    assert torch.allclose(model.state_dict()["conv_stem.weight"], stem)
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 2)


def test_embedded_is_refused_for_other_models() -> None:
    with pytest.raises(ConfigError, match="embedded weights exist only for tf_efficientnet_lite0"):
        create_model("resnet18", num_classes=2, in_chans=3, image_size=32, pretrained="embedded")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_from_a_file_keep_the_backbone_and_fit_a_new_head(tmp_path, suffix) -> None:
    torch.manual_seed(0)
    source = create_model("resnet18", num_classes=10, in_chans=3, image_size=32)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(
        {"state_dict": state}, path
    )
    model = create_model("resnet18", num_classes=3, in_chans=3, image_size=32, pretrained=str(path))
    assert torch.equal(model.state_dict()["conv1.weight"], source.state_dict()["conv1.weight"])
    assert model.state_dict()["fc.weight"].shape == (3, 512)


def test_a_file_for_another_architecture_names_the_mismatch(tmp_path) -> None:
    path = tmp_path / "other.safetensors"
    other = create_model("cnn", num_classes=2, in_chans=3, image_size=32)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(ConfigError, match=r"does not fit resnet18: missing \[.*'conv1\.weight'"):
        create_model("resnet18", num_classes=2, in_chans=3, image_size=32, pretrained=str(path))


def test_pickled_objects_are_never_loaded(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(Exception, match=r"Weights only load failed|Unsupported"):
        create_model("resnet18", num_classes=2, in_chans=3, image_size=32, pretrained=str(path))


def test_hub_weights_offline_say_how_to_proceed(tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants as hub

    from trackvision.errors import TrackvisionError

    # The hub reads these at import time, so the module's constants are patched as well.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))  # an empty hub cache
    with pytest.raises(TrackvisionError) as err:
        create_model("mobilevit_xxs", num_classes=2, in_chans=3, image_size=64, pretrained="hub")
    for hint in ("HF_HUB_OFFLINE", ".safetensors", "embedded", "pretrained: none"):
        assert hint in str(err.value), hint


def test_a_new_head_on_pretrained_weights_starts_near_zero() -> None:
    """Pretrained features with timm's head init gave losses of 2-7 at the start of fine-tuning."""
    model = create_model(
        "tf_efficientnet_lite0", num_classes=2, in_chans=3, image_size=64, pretrained="embedded"
    ).eval()
    with torch.no_grad():
        logits = model(torch.rand(4, 3, 64, 64))
    assert logits.abs().max() < 0.5
    assert model.classifier.bias.abs().max() == 0
