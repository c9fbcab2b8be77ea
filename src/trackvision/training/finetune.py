"""Fine-tuning strategies: which parameters train, and at what learning rate, epoch by epoch.

- ``full``: everything trains at the base learning rate from the first step.
- ``linear_probe``: only the classifier trains; the backbone is frozen *and* kept in eval mode,
  so its batch-norm statistics do not drift either (frozen weights with moving statistics would
  still change what the backbone computes).
- ``gradual``: the classifier alone for ``head_epochs``, then everything, the backbone at
  ``lr * backbone_lr_scale`` so the pretrained features are adjusted rather than overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


def classifier(model: nn.Module) -> nn.Module:
    """The model's final classification layer (timm's ``get_classifier`` or the last Linear)."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
        return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__}: no classifier layer found")
    return linears[-1]


@dataclass(frozen=True)
class ParamSplit:
    """The model's parameters in two disjoint groups: the classifier and everything else."""

    head: list[nn.Parameter]
    backbone: list[nn.Parameter]


def split_parameters(model: nn.Module) -> ParamSplit:
    """Classifier parameters and backbone parameters, each exactly once."""
    head_ids = {id(p) for p in classifier(model).parameters()}
    head = [p for p in model.parameters() if id(p) in head_ids]
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    return ParamSplit(head, backbone)


def backbone_frozen(mode: str, epoch: int, head_epochs: int) -> bool:
    """Whether the backbone is frozen in ``epoch`` (1-based) under ``mode``."""
    if mode == "linear_probe":
        return True
    return mode == "gradual" and epoch <= head_epochs


def set_phase(model: nn.Module, frozen: bool) -> None:
    """Put ``model`` in training mode for one epoch, with the backbone frozen or not."""
    head = classifier(model)
    for p in model.parameters():
        p.requires_grad_(not frozen)
    for p in head.parameters():
        p.requires_grad_(True)
    model.train()
    if frozen:  # frozen means frozen: no batch-norm statistics updates, no dropout noise
        model.eval()
        head.train()
