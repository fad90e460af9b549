"""MoonViT and the projector in torch, as the model code computes them (vLLM moonvit.py / HF modeling_kimi_vl.py).

The rotary embedding multiplies complex numbers in float32 (apply_rope's view_as_complex); the encoder runs one
attention over the whole packed sequence with a block-diagonal mask built from the images' ids (instead of the
spec's per-image varlen loop); LayerNorm, GELU and interpolation are torch's own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from specs.kimi_vl import (
    LN_EPS,
    THETA,
    check_moonvit_encode_args,
    check_patch_merge_args,
    check_pos_emb_args,
    check_projector_args,
    check_rope_args,
)


def _complex_dtype(dtype):
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def rope_2d(x, positions, *, theta: float = THETA):
    check_rope_args(x, positions, theta)
    T, H, d = x.shape
    real = torch.float64 if x.dtype == torch.float64 else torch.float32
    dim_range = torch.arange(0, d, 4, device=x.device)[: d // 4].to(real)
    freqs = 1.0 / (theta ** (dim_range / d))
    x_freqs = positions[:, 1:].to(real) * freqs  # width first (moonvit.py: x_cis before y_cis)
    y_freqs = positions[:, :1].to(real) * freqs
    angles = torch.stack((x_freqs, y_freqs), -1).reshape(T, 1, d // 2)
    cis = torch.polar(torch.ones_like(angles), angles)
    z = torch.view_as_complex(x.to(real).reshape(T, H, d // 2, 2).contiguous())
    return torch.view_as_real(z * cis).flatten(-2).to(x.dtype)


def pos_emb(weight, h: int, w: int):
    check_pos_emb_args(weight, h, w)
    if (h, w) == tuple(weight.shape[:2]):
        return weight.flatten(0, 1).clone()
    P = F.interpolate(weight.permute(2, 0, 1)[None], size=(h, w), mode="bicubic", align_corners=False)[0]
    return P.permute(1, 2, 0).flatten(0, 1)


def _positions(grid):
    out = []
    for h, w in grid:
        r = torch.arange(h).repeat_interleave(w)
        c = torch.arange(w).repeat(h)
        out.append(torch.stack((r, c), -1))
    return torch.cat(out)


def moonvit_encode(patches, grid_hw, params, *, heads: int = 1):
    grid, D = check_moonvit_encode_args(patches, grid_hw, params, heads)
    T = patches.shape[0]
    dh = D // heads
    h = F.linear(patches, params["patch_w"], params["patch_b"])
    h = h + torch.cat([pos_emb(params["pos"], gh, gw) for gh, gw in grid])
    positions = _positions(grid).to(patches.device)
    image = torch.repeat_interleave(torch.arange(len(grid)), torch.tensor([a * b for a, b in grid])).to(patches.device)
    same_image = image[:, None] == image[None, :]
    for L in params["layers"]:
        a = F.layer_norm(h, (D,), L["ln1_w"], L["ln1_b"], LN_EPS)
        q, k, v = F.linear(a, L["qkv_w"], L["qkv_b"]).view(T, 3, heads, dh).unbind(1)
        q, k = rope_2d(q, positions), rope_2d(k, positions)
        S = torch.einsum("thd,shd->hts", q, k) / math.sqrt(dh)
        P = S.masked_fill(~same_image, float("-inf")).softmax(-1)
        o = torch.einsum("hts,shd->thd", P, v).reshape(T, D)
        h = h + F.linear(o, L["o_w"], L["o_b"])
        m = F.gelu(F.linear(F.layer_norm(h, (D,), L["ln2_w"], L["ln2_b"], LN_EPS), L["fc1_w"], L["fc1_b"]),
                   approximate="tanh")
        h = h + F.linear(m, L["fc2_w"], L["fc2_b"])
    return F.layer_norm(h, (D,), params["final_w"], params["final_b"], LN_EPS)


def patch_merge(x, grid_hw):
    grid = check_patch_merge_args(x, grid_hw)
    index, start = [], 0
    for h, w in grid:
        window = torch.arange(h * w, device=x.device).view(h // 2, 2, w // 2, 2).permute(0, 2, 1, 3)
        index.append(start + window.reshape(-1, 4))
        start += h * w
    return x[torch.cat(index)]


def projector(x, grid_hw, ln_w, ln_b, w1, b1, w2, b2, *, eps: float = LN_EPS):
    check_projector_args(x, ln_w, ln_b, w1, b1, w2, b2)  # grid_hw: patch_merge checks it
    D = x.shape[1]
    m = patch_merge(F.layer_norm(x, (D,), ln_w, ln_b, eps), grid_hw).reshape(-1, 4 * D)
    return F.linear(F.gelu(F.linear(m, w1, b1)), w2, b2)
