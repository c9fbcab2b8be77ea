"""The training path's speed levers: precision auto, channels_last, CPU dropout and attention."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from timm.layers.attention import Attention
from torch import nn

from trackvision.errors import TrainingError
from trackvision.evaluation.footprint import machine
from trackvision.models.zoo import create_model
from trackvision.training import attention
from trackvision.training.attention import FastAttention, cpu_fast_attention
from trackvision.training.dropout import _LEVELS, FastDropout, cpu_fast_dropout, fast_dropout
from trackvision.training.precision import native_bf16, resolve_precision

from .test_loop import SETTINGS, _model, fit_toy

CPU = torch.device("cpu")


def test_auto_precision_follows_the_cpu() -> None:
    expected = "bf16" if native_bf16(CPU) else "fp32"
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == "fp32"


def test_auto_precision_picks_bf16_only_where_native(monkeypatch) -> None:
    monkeypatch.setattr("trackvision.training.precision.native_bf16", lambda device: True)
    assert resolve_precision("auto", CPU) == "bf16"
    monkeypatch.setattr("trackvision.training.precision.native_bf16", lambda device: False)
    assert resolve_precision("auto", CPU) == "fp32"


def test_emulated_bf16_warns(monkeypatch, caplog) -> None:
    monkeypatch.setattr("trackvision.training.precision.native_bf16", lambda device: False)
    with caplog.at_level(logging.WARNING, logger="trackvision.training.precision"):
        assert resolve_precision("bf16", CPU) == "bf16"  # the user's explicit choice stands
    assert "emulated" in caplog.text and "precision auto" in caplog.text


def test_fp16_needs_cuda() -> None:
    with pytest.raises(TrainingError, match="fp16 needs a CUDA device, not cpu"):
        resolve_precision("fp16", CPU)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_fast_dropout_keeps_one_minus_p_and_rescales(p: float) -> None:
    y = fast_dropout(torch.ones(400_000), p)
    kept = y != 0
    # 400k Bernoulli draws: the standard error of the rate is < 0.001.
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    # Each of the four 16-bit lanes of a 64-bit draw is an unbiased sample on its own.
    lanes = kept.view(-1, 4).float().mean(0)
    assert torch.all((lanes - (1 - p)).abs() < 0.01), lanes


def test_fast_dropout_is_seeded_by_torch_and_passes_gradients_through_kept_values() -> None:
    x = torch.randn(64, 49, 96, requires_grad=True)
    torch.manual_seed(3)
    a = fast_dropout(x, 0.2)
    torch.manual_seed(3)
    b = fast_dropout(x, 0.2)
    assert torch.equal(a, b)
    a.sum().backward()
    assert torch.equal(x.grad, (a != 0).float() / 0.8)
    assert fast_dropout(x, 0.0) is x
    assert not fast_dropout(x, 1.0).any()


def test_fast_dropout_matches_keep_then_scale_bit_for_bit() -> None:
    """One multiply by a scaled mask gives exactly (x * keep) * scale, forward and backward."""
    x = torch.randn(64, 49, 97, requires_grad=True)
    grad = torch.randn(64, 49, 97)
    y = fast_dropout(x, 0.1)
    y.backward(grad)
    keep = y != 0
    assert torch.equal(y, x.detach() * keep * (1 / 0.9))
    assert torch.equal(x.grad, grad * (1 / 0.9) * keep)


@pytest.mark.parametrize("p", [1e-6, 0.1, 0.5, 1 - 2e-5, 1 - 1e-6])
def test_fast_dropout_keeps_exactly_the_lanes_at_or_above_the_threshold(p: float) -> None:
    """The int16 sub-clamp-add mask equals the plain comparison, even at the extreme thresholds."""
    x = torch.ones(64, 49, 97)
    torch.manual_seed(5)
    y = fast_dropout(x, p)
    torch.manual_seed(5)  # the same draw, compared the plain way
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_()
    lanes = words.view(torch.int16)[: x.numel()].view(x.shape) & (_LEVELS - 1)
    assert torch.equal(y != 0, lanes.int() >= round(p * _LEVELS))


def test_fast_dropout_is_identity_in_eval() -> None:
    layer = FastDropout(0.5).eval()
    x = torch.randn(8, 8)
    assert torch.equal(layer(x), x)


def _tiny_vit(depth: int) -> nn.Module:
    arch = {"dim": 16, "depth": depth, "heads": 2, "patch_size": 4, "dropout": 0.2}
    return create_model("vit", num_classes=2, in_chans=1, image_size=16, arch=arch)


def test_fit_swaps_dropout_and_gives_the_model_back_unchanged() -> None:
    model = _tiny_vit(depth=1)
    before = [type(m) for m in model.modules()]
    seen: list[type] = []
    with cpu_fast_dropout(model):
        seen = [type(m) for m in model.modules()]
    assert FastDropout in seen and nn.Dropout in before
    assert [type(m) for m in model.modules()] == before
    fit_toy(dataclasses.replace(SETTINGS, epochs=1), model=model, n=32)
    assert [type(m) for m in model.modules()] == before  # restored after training too


def _output_and_grads(
    layer: nn.Module, x: torch.Tensor, grad: torch.Tensor, bf16: bool = False, **kwargs
) -> list[torch.Tensor]:
    """One forward (under bf16 autocast if asked) and backward: the output, then every gradient."""
    x.grad = None
    layer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = layer(x, **kwargs)
    out.backward(grad)
    return [out.detach(), x.grad, *(p.grad for p in layer.parameters())]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"qk_norm": True, "norm_layer": nn.LayerNorm},
        {"gated": True, "scale_norm": True, "norm_layer": nn.LayerNorm},
    ],
    ids=["plain", "qk_norm", "gated_scale_norm"],
)
def test_fast_attention_matches_timms_bit_for_bit(options: dict) -> None:
    """Outputs and every gradient equal timm's own forward and backward, to the bit."""
    torch.manual_seed(0)
    layer = Attention(96, num_heads=4, qkv_bias=True, **options)
    x = torch.randn(8, 49, 96, requires_grad=True)
    grad = torch.randn(8, 49, 96)
    reference = _output_and_grads(layer, x, grad)
    with cpu_fast_attention(layer):
        assert type(layer) is FastAttention
        fast = _output_and_grads(layer, x, grad)
    assert type(layer) is Attention
    assert len(fast) == len(reference)
    for a, b in zip(reference, fast, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("options", "mask"),
    [
        ({}, None),
        ({}, "causal"),
        ({}, "bool"),
        ({"qk_norm": True, "norm_layer": nn.LayerNorm}, None),
        ({"gated": True, "scale_norm": True, "norm_layer": nn.LayerNorm}, "additive"),
    ],
    ids=["plain", "causal", "bool_mask", "qk_norm", "gated_additive_mask"],
)
def test_fast_attention_under_bf16_autocast_is_timms_non_fused_path(
    options: dict, mask: str | None, monkeypatch
) -> None:
    """Under autocast: timm's non-fused branch to the bit (fused bf16 attention's CPU backward was
    7x slower than fp32), never the fused kernel, and within bf16's reach of fp32."""
    torch.manual_seed(0)
    layer = Attention(96, num_heads=4, qkv_bias=True, **options)
    x = torch.randn(8, 49, 96, requires_grad=True)
    grad = torch.randn(8, 49, 96)
    kwargs: dict = {"is_causal": mask == "causal"}
    if mask == "bool":
        kwargs["attn_mask"] = torch.rand(8, 1, 49, 49) > 0.3
        kwargs["attn_mask"][..., 0] = True  # every query sees at least one key
    elif mask == "additive":
        kwargs["attn_mask"] = torch.randn(8, 1, 49, 49)

    with torch.no_grad():
        exact = layer(x, **kwargs)  # fp32, fused
    layer.fused_attn = False
    reference = _output_and_grads(layer, x, grad, bf16=True, **kwargs)
    layer.fused_attn = True
    fused_calls: list[int] = []
    sdpa = attention.F.scaled_dot_product_attention
    monkeypatch.setattr(
        attention.F,
        "scaled_dot_product_attention",
        lambda *a, **k: fused_calls.append(1) or sdpa(*a, **k),
    )
    with cpu_fast_attention(layer):
        fast = _output_and_grads(layer, x, grad, bf16=True, **kwargs)
    assert not fused_calls
    assert fast[0].dtype == torch.bfloat16
    for a, b in zip(reference, fast, strict=True):
        assert torch.equal(a, b)
    error = (fast[0].float() - exact).abs()
    assert error.mean() < 4e-3 and error.max() < 3e-2, (error.mean(), error.max())  # 3x measured


def test_split_heads_gives_an_unused_head_a_zero_gradient() -> None:
    qkv = torch.randn(2, 5, 3 * 2 * 4, requires_grad=True)
    q, _, v = attention._SplitHeads.apply(qkv, 2)
    assert q.shape == (2, 2, 5, 4) and torch.equal(v[1, 1, 3], qkv[1, 3, 2 * 8 + 4 :].detach())
    v.sum().backward()
    grad = qkv.grad.view(2, 5, 3, 2, 4)
    assert torch.equal(grad[:, :, 2], torch.ones(2, 5, 2, 4)) and not grad[:, :, :2].any()


def test_fit_trains_through_the_fast_attention_and_gives_timms_back(monkeypatch) -> None:
    model = _tiny_vit(depth=2)
    calls = []
    split = attention._SplitHeads.apply
    monkeypatch.setattr(attention._SplitHeads, "apply", lambda *a: calls.append(1) or split(*a))
    fit_toy(dataclasses.replace(SETTINGS, epochs=1), model=model, n=32)
    assert calls  # the training steps went through it
    assert sum(type(m) is Attention for m in model.modules()) == 2
    assert not any(isinstance(m, FastAttention) for m in model.modules())


def test_channels_last_trains_the_same_model() -> None:
    """NHWC changes kernels, not the maths: the same run ends within float noise."""
    runs = [
        fit_toy(dataclasses.replace(SETTINGS, epochs=2, channels_last=cl)) for cl in (False, True)
    ]
    assert runs[1].history[-1]["train_loss"] == pytest.approx(
        runs[0].history[-1]["train_loss"], abs=1e-4
    )
    assert runs[1].best_val_accuracy == runs[0].best_val_accuracy
    model = _model()
    fit_toy(dataclasses.replace(SETTINGS, epochs=1, channels_last=True), model=model, n=32)
    assert all(p.is_contiguous() for p in model.parameters())  # saved in the default layout


def test_report_cnn_hands_max_pool_a_channels_last_gradient() -> None:
    """Flatten's NCHW gradient sent the max-pool backward through layout copies; same grads now."""
    from torch.profiler import ProfilerActivity, profile

    from trackvision.models.cnn import ReportCNN

    torch.manual_seed(0)
    model = ReportCNN(in_chans=1, num_classes=2, image_size=28).to(
        memory_format=torch.channels_last
    )
    x = torch.randn(8, 1, 28, 28).contiguous(memory_format=torch.channels_last)

    def grads(forward) -> list[torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(1)  # the head's dropout
        forward(x).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads(lambda t: model.head(model.features(t)))  # what forward did before
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ours = grads(model)
    assert all(torch.equal(a, b) for a, b in zip(ours, plain, strict=True))
    copies = [e for e in prof.events() if e.name in ("aten::copy_", "aten::clone")]
    in_pool_backward = [e.name for e in copies if "max_pool2d_with_indices_backward" in _callers(e)]
    assert in_pool_backward == []


def _callers(event) -> set[str]:
    """The names of the ops a profiler event ran inside."""
    names, parent = set(), event.cpu_parent
    while parent is not None:
        names.add(parent.name.removeprefix("aten::"))
        parent = parent.cpu_parent
    return names


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_fused_optimizers_take_the_single_tensor_step(name: str) -> None:
    """The fused kernels ``build_optimizer`` picks follow the same update as the plain loop."""
    from trackvision.training.optim import build_optimizer

    settings = dataclasses.replace(SETTINGS, optimizer=name, weight_decay=0.01)
    torch.manual_seed(0)
    start = create_model("cnn", num_classes=2, in_chans=1, image_size=16).state_dict()
    params = {}
    for fused in (True, False):
        model = create_model("cnn", num_classes=2, in_chans=1, image_size=16)
        model.load_state_dict(start)
        optimizer = build_optimizer(model, settings)
        assert optimizer.defaults["fused"] is True
        if not fused:  # the same optimizer, taken through its single-tensor loop
            for group in optimizer.param_groups:
                group["fused"], group["foreach"] = False, False
        torch.manual_seed(1)
        for _ in range(5):
            for p in model.parameters():
                p.grad = torch.randn_like(p)
            optimizer.step()
        params[fused] = torch.cat([p.detach().flatten() for p in model.parameters()])
    before = torch.cat([start[n].flatten() for n, _ in model.named_parameters()])
    assert (params[True] - before).abs().max() > 1e-3  # five steps moved the weights
    torch.testing.assert_close(params[True], params[False], rtol=1e-5, atol=1e-6)


def test_the_machine_is_described_for_every_benchmark() -> None:
    info = machine()
    assert info["cores"] >= 1 and info["torch_threads"] >= 1
    assert info["isa"] == torch.backends.cpu.get_cpu_capability()
    assert info["native_bf16"] == native_bf16(CPU)
    assert isinstance(info["cpu"], str) and info["cpu"]
