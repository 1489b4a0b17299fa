"""open_clip's ViT image tower rewritten for its int8 ONNX export: the same function in fewer,
faster operators. Measured on ViT-B-32 here (BENCHMARKS.md, "The export reworked"):

- The patch embedding, a convolution whose stride is its kernel, becomes the reshape and matrix
  product it is: dynamic quantisation then runs it in ONNX Runtime's int8 matrix kernel instead
  of `ConvInteger`, which took 19 % of the forward pass.
- Self-attention is written out directly instead of traced through `nn.MultiheadAttention`,
  whose decomposition is about 100 transposes, gathers and shape operations for 12 layers; the
  query and key are scaled by d^-1/4 each, as torch does.

Only modules whose configuration the rewrite reproduces exactly are replaced; anything else
(timm and ResNet towers, masks, cross-attention, biases on keys) keeps its own operators.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def rewrite_vit(visual: Any, size: tuple[int, int]) -> None:
    """Rewrite, in place, the parts of `visual` (an image tower for `size` inputs) that have a
    faster exact form; leave a tower that is not open_clip's own ViT as it is."""
    from open_clip.transformer import VisionTransformer

    if not isinstance(visual, VisionTransformer):
        return
    if is_patch_embedding(visual.conv1, size):
        visual.conv1 = patches(visual.conv1, size)
    for block in visual.transformer.resblocks:
        if is_self_attention(block):
            block.attn = self_attention(block.attn)


def is_patch_embedding(conv: Any, size: tuple[int, int]) -> bool:
    """Whether `conv` cuts an image of `size` into whole patches that do not overlap."""
    import torch

    return (
        isinstance(conv, torch.nn.Conv2d)
        and conv.kernel_size == conv.stride
        and conv.padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and size[0] % conv.kernel_size[0] == 0
        and size[1] % conv.kernel_size[1] == 0
    )


def patches(conv: Any, size: tuple[int, int]) -> torch.nn.Module:
    """The patch convolution `conv` as a reshape and a matrix product, its output unchanged."""
    import torch

    channels, (ph, pw) = conv.in_channels, conv.kernel_size
    rows, cols = size[0] // ph, size[1] // pw

    class Patches(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            weight = conv.weight.detach().reshape(conv.out_channels, -1)
            self.weight = torch.nn.Parameter(weight.t().contiguous(), requires_grad=False)
            self.bias = conv.bias

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.reshape(-1, channels, rows, ph, cols, pw).permute(0, 2, 4, 1, 3, 5)
            y = x.reshape(-1, rows * cols, channels * ph * pw) @ self.weight
            if self.bias is not None:
                y = y + self.bias
            return y.permute(0, 2, 1).reshape(-1, y.shape[-1], rows, cols)

    return Patches()


def is_self_attention(block: Any) -> bool:
    """Whether `block` is one of open_clip's residual blocks whose attention is the plain
    batch-first self-attention `self_attention` reproduces: one packed input projection with
    its bias, no key/value biases or zero attention, not cross-attention. (An attention pooler,
    which attends from learned queries, is not such a block.)"""
    import torch
    from open_clip.transformer import ResidualAttentionBlock

    attn = getattr(block, "attn", None)
    return (
        isinstance(block, ResidualAttentionBlock)
        and isinstance(attn, torch.nn.MultiheadAttention)
        and attn.batch_first
        and attn._qkv_same_embed_dim
        and attn.in_proj_bias is not None
        and attn.out_proj.bias is not None
        and attn.bias_k is None
        and not attn.add_zero_attn
        and not hasattr(block, "ln_1_kv")
    )


def self_attention(attn: Any) -> torch.nn.Module:
    """`attn` (an `nn.MultiheadAttention`, called as open_clip's blocks call it) written out as
    matrix products: equal to it up to float rounding (about 1e-7 relative), for inference
    only (no dropout)."""
    import torch

    heads, width = attn.num_heads, attn.embed_dim
    depth = width // heads
    root = depth**-0.25  # on the query and on the key, as torch scales them

    class SelfAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w_in = torch.nn.Parameter(attn.in_proj_weight.detach().t().contiguous())
            self.b_in = torch.nn.Parameter(attn.in_proj_bias.detach())
            self.w_out = torch.nn.Parameter(attn.out_proj.weight.detach().t().contiguous())
            self.b_out = torch.nn.Parameter(attn.out_proj.bias.detach())

        def forward(
            self,
            x: torch.Tensor,
            k: torch.Tensor | None = None,
            v: torch.Tensor | None = None,
            need_weights: bool = False,
            attn_mask: torch.Tensor | None = None,
        ) -> tuple[torch.Tensor, None]:
            others = (k, v)
            if (
                attn_mask is not None
                or need_weights
                or any(t is not None and t is not x for t in others)
            ):
                raise ValueError("only unmasked self-attention is rewritten")
            if self.training and attn.dropout:
                raise ValueError("the rewritten attention is for inference: it has no dropout")
            tokens = x.shape[1]
            qkv = x @ self.w_in + self.b_in
            qkv = qkv.reshape(-1, tokens, 3, heads, depth).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0] * root, qkv[1] * root, qkv[2]
            weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
            out = (weights @ v).transpose(1, 2).reshape(-1, tokens, width)
            return out @ self.w_out + self.b_out, None

    return SelfAttention()
