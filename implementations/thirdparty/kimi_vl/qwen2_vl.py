"""Qwen2-VL's vision rotary embedding and PatchMerger (transformers) as comparisons for MoonViT's.

Both use the same frequencies theta^(-4j/d) and a 2x2 merge, with different layouts:

* rotary: ``Qwen2VLVisionRotaryEmbedding`` with ``apply_rotary_pos_emb_vision`` rotates the pairs (j, j + d/2)
  (rotate_half) with angles [h w_j | w w_j] in each half, height first; MoonViT rotates adjacent pairs, width first.
* merger: ``PatchMerger`` is LayerNorm (eps 1e-6) + view(-1, 4 C) + MLP on tokens its processor already emitted in
  2x2-window order; MoonViT's tokens come in raster order and its merger reorders them. ``qwen2_vl_projector``
  feeds raster tokens as they are; ``qwen2_vl_projector_windowed`` first applies the processor's window order.
  Both set the LayerNorm's eps to the one asked for (Kimi-VL: 1e-5).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def qwen2_vl_rope(x, positions, *, theta: float = 10000.0):
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import (
        Qwen2VLVisionRotaryEmbedding,
        apply_rotary_pos_emb_vision,
    )

    T, H, d = x.shape
    cfg = Qwen2VLVisionConfig(embed_dim=H * d, num_heads=H, rope_parameters={"rope_type": "axial",
                                                                             "rope_theta": theta})
    rotary = Qwen2VLVisionRotaryEmbedding(cfg).to(x.device)
    cos, sin = rotary(x, positions)  # position_ids (N, 2): column 0 = h, column 1 = w
    q, _ = apply_rotary_pos_emb_vision(x, x, cos, sin)
    return q


def _window_order(grid) -> torch.Tensor:
    """The token order Qwen2-VL's processor emits: each image's 2x2 windows, row-major, 4 tokens each."""
    index, start = [], 0
    for h, w in grid:
        index.append(start + torch.arange(h * w).view(h // 2, 2, w // 2, 2).permute(0, 2, 1, 3).reshape(-1))
        start += h * w
    return torch.cat(index)


def qwen2_vl_projector(x, grid_hw, ln_w, ln_b, w1, b1, w2, b2, *, eps: float = 1e-5, windowed: bool = False):
    from transformers.models.qwen2_vl.modeling_qwen2_vl import PatchMerger

    D, D_text = x.shape[1], w2.shape[0]
    merger = PatchMerger(dim=D_text, context_dim=D, spatial_merge_size=2).to(device=x.device, dtype=x.dtype)
    merger.ln_q.eps = eps
    with torch.no_grad():
        for p, w in ((merger.ln_q.weight, ln_w), (merger.ln_q.bias, ln_b), (merger.mlp[0].weight, w1),
                     (merger.mlp[0].bias, b1), (merger.mlp[2].weight, w2), (merger.mlp[2].bias, b2)):
            p.copy_(w)
    if windowed:
        grid = grid_hw.tolist() if isinstance(grid_hw, torch.Tensor) else grid_hw
        x = x[_window_order([(int(h), int(w)) for h, w in grid]).to(x.device)]
    return merger(x)


def qwen2_vl_projector_windowed(x, grid_hw, ln_w, ln_b, w1, b1, w2, b2, *, eps: float = 1e-5):
    return qwen2_vl_projector(x, grid_hw, ln_w, ln_b, w1, b1, w2, b2, eps=eps, windowed=True)
