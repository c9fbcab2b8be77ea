"""A cheaper backward for timm's self-attention on the CPU, swapped in while a model trains.

timm's ``Attention`` splits the qkv projection into heads with ``reshape -> permute -> unbind``.
Autograd undoes that in two passes: ``unbind``'s backward stacks the three head gradients, then
the permute's backward copies the stack, element by strided element, into the qkv layout (with
the stack, 7% of a ViT step, profiled). :class:`_SplitHeads` does the same split and writes the
three gradients straight into that layout in one pass. Results are bit-identical: it only moves
numbers.

Under bf16 autocast it takes timm's own non-fused branch instead of fused attention (plain
matmuls and a softmax, in bf16), bit-identical to timm with ``fused_attn`` off. The CPU's fused
attention backward in bf16 took 7x as long as in fp32; the plain path in bf16 is faster than
either for a small ViT's attention (64 x 4 heads x 49 tokens: 2.6-3.0 ms forward + backward
against 3.4-3.6 ms fused in fp32, which the project used before).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers.attention import Attention, maybe_add_mask, resolve_self_attn_mask
from torch import nn


class _SplitHeads(torch.autograd.Function):
    """(B, N, 3 * H * D) qkv -> q, k, v as (B, H, N, D) views; backward: one copy per gradient."""

    @staticmethod
    def forward(
        ctx: Any, qkv: torch.Tensor, heads: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, tokens, width = qkv.shape
        ctx.dims = (batch, tokens, heads, width // (3 * heads))
        q, k, v = qkv.reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None]:
        batch, tokens, heads, head_dim = ctx.dims
        # Autograd hands in zeros, never None, for an output the loss did not use.
        out = grads[0].new_empty(batch, tokens, 3, heads, head_dim)
        for i, grad in enumerate(grads):
            out[:, :, i].copy_(grad.transpose(1, 2))
        return out.view(batch, tokens, -1), None


class FastAttention(Attention):
    """timm's ``Attention`` with :class:`_SplitHeads` on the CPU (elsewhere timm's own forward);
    fused attention in fp32, timm's non-fused branch under autocast."""

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        if x.device.type != "cpu" or not self.fused_attn:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        # The lines below are timm 1.0's forward; only the split differs (tests check outputs
        # and gradients against timm's fused and, under autocast, non-fused paths, bit for bit).
        batch, tokens, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        q, k, v = _SplitHeads.apply(self.qkv(x), self.num_heads)
        q, k = self.q_norm(q), self.k_norm(k)
        if torch.is_autocast_enabled("cpu"):
            # timm's non-fused branch, line for line: in bf16 it beat fused attention in both
            # precisions here, since the fused bf16 backward took 18 ms a call (fp32: 2.5 ms).
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = maybe_add_mask(attn, resolve_self_attn_mask(tokens, attn, attn_mask, is_causal))
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        else:
            x = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=attn_mask,
                dropout_p=self.attn_drop.p if self.training else 0.0,
                is_causal=is_causal,
            )
        x = x.transpose(1, 2).reshape(batch, tokens, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        x = self.proj(x)
        return self.proj_drop(x)


@contextmanager
def cpu_fast_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, each timm ``Attention`` of ``model`` is a :class:`FastAttention`."""
    swapped = [m for m in model.modules() if type(m) is Attention]
    for module in swapped:
        module.__class__ = FastAttention  # same parameters and buffers: only forward differs
    try:
        yield model
    finally:
        for module in swapped:
            module.__class__ = Attention
