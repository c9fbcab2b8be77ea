"""The training path's speed levers: precision auto, channels_last, CPU dropout, attention."""

from __future__ import annotations

import logging

import pytest
import torch
from timm.layers.attention import Attention
from torch import nn

from trackvision.errors import TrainingError
from trackvision.evaluation.footprint import machine
from trackvision.models.zoo import create_model
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


def test_native_bf16_agrees_with_the_cpus_flags() -> None:
    """The private oneDNN query native_bf16 relies on still exists and still answers for this
    CPU: bf16 dot products in hardware (AVX512-BF16 or AMX) exactly when the kernel lists them."""
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to compare with")
    flags = set(cpuinfo.read_text().split())
    assert hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported"), "torch dropped the query"
    assert native_bf16(CPU) == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_fp16_needs_cuda() -> None:
    with pytest.raises(TrainingError, match="fp16 needs a CUDA device, not cpu"):
        resolve_precision("fp16", CPU)


def _tiny_vit(depth: int) -> nn.Module:
    arch = {"dim": 16, "depth": depth, "heads": 2, "patch_size": 4, "dropout": 0.2}
    return create_model("vit", num_classes=2, in_chans=1, image_size=16, arch=arch)


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


def test_attention_takes_timms_non_fused_branch_only_under_cpu_autocast(monkeypatch) -> None:
    """timm's own ``fused_attn`` switch: off inside the block under bf16 autocast on the CPU (the
    fused bf16 backward is slow there), untouched in fp32, and given back afterwards."""
    from trackvision.training import precision

    torch.manual_seed(0)
    layer = Attention(96, num_heads=4, qkv_bias=True)
    x = torch.randn(8, 49, 96, requires_grad=True)
    grad = torch.randn(8, 49, 96)
    layer.fused_attn = False
    reference = _output_and_grads(layer, x, grad, bf16=True)
    layer.fused_attn = True
    cpu = torch.device("cpu")
    with precision.attention_for(layer, cpu, None):
        assert layer.fused_attn is True
    with precision.attention_for(layer, cpu, torch.bfloat16):
        assert layer.fused_attn is False
        ours = _output_and_grads(layer, x, grad, bf16=True)
    assert layer.fused_attn is True
    for a, b in zip(reference, ours, strict=True):
        assert torch.equal(a, b)


def test_fit_gives_the_attention_layers_back_as_they_were() -> None:
    model = _tiny_vit(depth=2)
    fit_toy(SETTINGS.model_copy(update=dict(epochs=1, precision="bf16")), model=model, n=32)
    layers = [m for m in model.modules() if type(m) is Attention]
    assert len(layers) == 2 and all(m.fused_attn for m in layers)


def test_channels_last_trains_the_same_model() -> None:
    """NHWC changes kernels, not the maths: the same run ends within float noise."""
    runs = [
        fit_toy(SETTINGS.model_copy(update=dict(epochs=2, channels_last=cl)))
        for cl in (False, True)
    ]
    assert runs[1].history[-1]["train_loss"] == pytest.approx(
        runs[0].history[-1]["train_loss"], abs=1e-4
    )
    assert runs[1].best_val_accuracy == runs[0].best_val_accuracy
    model = _model()
    fit_toy(SETTINGS.model_copy(update=dict(epochs=1, channels_last=True)), model=model, n=32)
    assert all(p.is_contiguous() for p in model.parameters())  # saved in the default layout


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_fused_optimizers_take_the_single_tensor_step(name: str) -> None:
    """The fused kernels ``build_optimizer`` picks follow the same update as the plain loop."""
    from trackvision.training.optim import build_optimizer

    settings = SETTINGS.model_copy(update=dict(optimizer=name, weight_decay=0.01))
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


def test_validation_runs_at_the_training_batch_size_precision_and_layout() -> None:
    """Validation is part of every epoch: it runs as the epoch's forward passes do."""
    from trackvision.training.loop import evaluate_split

    from .test_loop import PRE, _bright_vs_dark

    model = _model().to(memory_format=torch.channels_last)
    seen: list[tuple[int, torch.dtype, bool]] = []

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        seen.append((len(x), output.dtype, x.is_contiguous(memory_format=torch.channels_last)))

    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_hook(record)
    val = _bright_vs_dark(40, seed=3)
    images, labels = torch.from_numpy(val.images).permute(0, 3, 1, 2), torch.from_numpy(val.labels)
    settings = SETTINGS.model_copy(update={"batch_size": 16, "channels_last": True})
    loss, accuracy = evaluate_split(model, images, labels, PRE, settings, CPU, torch.bfloat16)
    assert [n for n, _, _ in seen] == [16, 16, 8]
    assert {dtype for _, dtype, _ in seen} == {torch.bfloat16}
    assert all(nhwc for _, _, nhwc in seen)
    seen.clear()
    fp32_loss, _ = evaluate_split(model, images, labels, PRE, settings, CPU, None)
    assert {dtype for _, dtype, _ in seen} == {torch.float32}
    assert loss == pytest.approx(fp32_loss, abs=0.02) and 0 <= accuracy <= 1
    assert model.training  # handed back in the mode it came in
