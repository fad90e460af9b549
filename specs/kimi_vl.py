"""Kimi-VL: the Moonlight MoE language model's routing, the MoonViT native-resolution encoder and the projector.

Papers: Kimi Team 2025, "Kimi-VL Technical Report" (arXiv:2504.07491) §2.1 (MoonViT: native resolution, NaViT
packing, 2D RoPE; the MLP projector with pixel shuffle) and §2 (the Moonlight MoE LM); DeepSeek-AI 2024,
"DeepSeek-V3 Technical Report" (arXiv:2412.19437) §2.1.2 (the router and its balancing). Post: the Kimi-VL model
overview (seed post 14). Code read beside them: HF ``modeling_kimi_vl.py`` as ported in vLLM ``moonvit.py``
(``Rope2DPosEmb``, ``Learnable2DInterpPosEmb``, ``patch_merger``, ``KimiVLMultiModalProjector``). Equations,
conventions and known answers: catalogue/kimi_vl.md.

The MoE half (router, balance losses, dispatch / combine, the layer, the Moonlight preset) lives in
specs/moe_routing.py; this module adds MoonViT and the projector and states the document's claims.

MoonViT notation: an image of h x w patches in raster order; token (r, c) has row r (y, height) and column c
(x, width). Images are packed NaViT-style into one sequence with cu_seqlens = [0, cumsum(h_k w_k)] and attend
block-diagonally (FlashAttention's varlen attention, specs/flash_attention.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F_

from eqspec.contracts import ArgumentError
from eqspec.domain import OMIT, Built, Choice, Domain, Int, Optional, Real, resolve
from eqspec.outputs import Output
from eqspec.registry import REGISTRY, claim, operation, spec

from .flash_attention import varlen_attention
from .moe_routing import (  # noqa: F401  (re-exported: the document's operations)
    DOC,
    MOONLIGHT,
    MOONLIGHT_SHAPE,
    RouterConfig,
    balance_loss,
    bias_update,
    combine,
    dispatch,
    moe,
    route,
)
from .validators import check_dim, check_shape, check_tensor

DTYPES = ("float64", "float32", "bfloat16")

F64 = torch.float64
THETA = 10000.0
LN_EPS = 1e-5  # nn.LayerNorm's default, used by MoonViT's blocks and the projector's pre-norm


# ---------------------------------------------------------------------------------------------------
# Native-resolution grids
# ---------------------------------------------------------------------------------------------------

def check_grid(grid_hw, total: int | None = None, *, even: bool = False) -> list[tuple[int, int]]:
    """grid_hw: an int tensor (N, 2) of (h, w) patch counts, or a list of pairs."""
    rows = grid_hw.tolist() if isinstance(grid_hw, torch.Tensor) else grid_hw
    try:
        pairs = [(int(h), int(w)) for h, w in rows]
    except (TypeError, ValueError):
        raise ArgumentError("grid_hw",
                            f"grid_hw must be a list of (h, w) pairs or an int tensor (N, 2), got {grid_hw!r}") \
            from None
    if not pairs or any(h < 1 or w < 1 for h, w in pairs):
        raise ArgumentError("grid_hw", f"grid_hw must hold at least one image with h, w >= 1, got {pairs}")
    if even and any(h % 2 or w % 2 for h, w in pairs):
        raise ArgumentError("grid_hw",
                            f"grid_hw: the 2x2 patch merger needs even h and w (pad the image to a multiple of 2 "
                            f"patches), got {pairs}")
    if total is not None and sum(h * w for h, w in pairs) != total:
        raise ArgumentError("grid_hw", f"grid_hw must account for all {total} packed tokens (sum of h*w), got {pairs} "
                            f"(sum {sum(h * w for h, w in pairs)})")
    return pairs


PATCH = 14


@spec(DOC, latex=r"X_{rw+c}=\mathrm{vec}\big(I[:,\,14r:14r+14,\,14c:14c+14]\big),\quad h=H/14,\ w=W/14",
      source="Kimi-VL §2.1 (native resolution: no resizing to a fixed grid); moonvit.py MoonVisionPatchEmbed "
             "(Conv2d, kernel = stride = 14)",
      convention="Channels-first images whose sides are multiples of the patch; patches in raster order, each "
                 "flattened (channel, row, column) like the Conv2d's weight.")
def patchify(image: torch.Tensor, patch: int = PATCH) -> tuple[torch.Tensor, tuple[int, int]]:
    """(h w, C patch^2) raster-order patches of a (C, H, W) image, and its grid (h, w)."""
    check_tensor("image", image, rank=3)
    C, H, W = image.shape
    if H % patch or W % patch:
        raise ArgumentError("image", f"image sides must be multiples of the patch size {patch}, got {H} x {W}")
    h, w = H // patch, W // patch
    patches = image.reshape(C, h, patch, w, patch).permute(1, 3, 0, 2, 4).reshape(h * w, C * patch * patch)
    return patches, (h, w)


@spec(DOC, latex=r"(r,c)\ \text{for token } rw+c,\ 0\le r<h,\ 0\le c<w",
      source="Kimi-VL §2.1 (native resolution, raster order); moonvit.py Rope2DPosEmb.get_freqs_cis_by_seqlens")
def grid_positions(grid_hw) -> torch.Tensor:
    """(T, 2) int64 (row, column) of every packed token, restarting at (0, 0) for each image."""
    rows = [torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 2)
            for h, w in check_grid(grid_hw)]
    return torch.cat(rows)


@spec(DOC, latex=r"\mathrm{cu}=[0,\ \mathrm{cumsum}_k(h_kw_k)]",
      source="NaViT (Dehghani et al. 2023) packing; moonvit.py MoonVitEncoder (cu_seqlens)")
def cu_seqlens(grid_hw) -> torch.Tensor:
    sizes = [h * w for h, w in check_grid(grid_hw)]
    return torch.tensor([0, *torch.cumsum(torch.tensor(sizes), 0).tolist()], dtype=torch.int32)


# ---------------------------------------------------------------------------------------------------
# The 2D rotary embedding
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\omega_i=\theta^{-4i/d},\quad 0\le i<d/4", source="moonvit.py Rope2DPosEmb (dim_range, freqs)")
def rope_frequencies(d: int, theta: float = THETA, device=None) -> torch.Tensor:
    return theta ** (-4.0 * torch.arange(d // 4, dtype=F64, device=device) / d)


@spec(DOC, latex=r"\phi_{2i}=c\,\omega_i\ (x=\text{column}),\quad \phi_{2i+1}=r\,\omega_i\ (y=\text{row})",
      source="moonvit.py Rope2DPosEmb._precompute_freqs_cis (torch.cat([x_cis, y_cis], -1) per frequency)",
      convention="x (width) first: the class docstring says height first, the code puts x_cis first.")
def rope_angles(positions: torch.Tensor, d: int, theta: float = THETA) -> torch.Tensor:
    """(T, d/2) rotation angle of each complex pair of adjacent reals."""
    omega = rope_frequencies(d, theta, positions.device)
    r, c = positions[:, :1].to(F64), positions[:, 1:].to(F64)
    return torch.stack((c * omega, r * omega), dim=-1).reshape(-1, d // 2)


def check_rope_args(x, positions, theta):
    check_tensor("x", x, rank=3)
    d = x.shape[-1]
    if d % 4:
        raise ArgumentError("x.shape[-1]",
                            f"x.shape[-1] (head dim {d}) must be a multiple of 4 for the 2D rotary embedding")
    if not isinstance(positions, torch.Tensor) or positions.dtype not in (torch.int32, torch.int64) or \
            tuple(positions.shape) != (x.shape[0], 2):
        got = (positions.dtype, tuple(positions.shape)) if isinstance(positions, torch.Tensor) else type(positions)
        raise ArgumentError("positions",
                            f"positions must be an integer tensor (T = {x.shape[0]}, 2) of (row, column), got {got}")
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 1:
        raise ArgumentError("theta", f"theta must be a number > 1, got {theta!r}")


@operation(
    DOC,
    latex=r"\tilde x_{2p}+i\,\tilde x_{2p+1}=(x_{2p}+i\,x_{2p+1})\,e^{i\phi_p},\quad "
          r"\phi_{2i}=c\,\theta^{-4i/d},\ \phi_{2i+1}=r\,\theta^{-4i/d}",
    source="Kimi-VL §2.1 (2D RoPE); moonvit.py Rope2DPosEmb and apply_rope (view_as_complex of adjacent pairs)",
    dtypes=DTYPES,
    returns="x_rotated",
    summary="MoonViT's 2D rotary embedding. x (T, H, d) with d % 4 == 0, positions (T, 2) int (row, column), "
            "theta -> x rotated, same shape and dtype: complex pair p = (x[2p], x[2p+1]) turns by angle "
            "column x w_i for p = 2i and row x w_i for p = 2i + 1, w_i = theta^(-4i/d).",
    convention="Adjacent reals form a complex pair; x (column) before y (row) for each frequency.",
    baseline="torch.naive",
    outputs=(Output("x_rotated", shape="x.shape", dtype="x", device="x"),),
)
def rope_2d(x: torch.Tensor, positions: torch.Tensor, *, theta: float = THETA) -> torch.Tensor:
    check_rope_args(x, positions, theta)
    X = x.to(F64)
    phi = rope_angles(positions, x.shape[-1], theta)[:, None, :]  # (T, 1, d/2), one angle per head's pair
    re, im = X[..., 0::2], X[..., 1::2]
    out = torch.stack((re * torch.cos(phi) - im * torch.sin(phi), re * torch.sin(phi) + im * torch.cos(phi)), -1)
    return out.reshape(x.shape).to(x.dtype)


# ---------------------------------------------------------------------------------------------------
# The absolute position embedding, interpolated to the image's grid
# ---------------------------------------------------------------------------------------------------

def check_pos_emb_args(weight, h, w) -> None:
    check_tensor("weight", weight, rank=3)
    for name, n in (("h", h), ("w", w)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ArgumentError(name, f"{name} must be a positive integer, got {n!r}")


@operation(
    DOC,
    latex=r"P_{h,w}=\mathrm{bicubic}(P_{64\times64}\to h\times w),\quad P_{64,64}=P_{64\times64}",
    source="Kimi-VL §2.1 (interpolated absolute position embedding from SigLIP); moonvit.py "
           "Learnable2DInterpPosEmb (F.interpolate mode='bicubic', identity at the table's own size)",
    returns="pos",
    summary="The learnable (H0, W0, D) position table resampled to an h x w grid: weight (H0, W0, D), h, w -> "
            "(h w, D) in raster order, weight's dtype; the table itself when (h, w) = (H0, W0).",
    convention="PyTorch's bicubic (Keys a = -0.75, align_corners=False, border replicated).",
    dtypes=("float64", "float32"),
    baseline="torch.naive",
    outputs=(Output("pos", shape="(h * w, weight.shape[2])", dtype="weight", device="weight"),),
)
def pos_emb(weight: torch.Tensor, h: int, w: int) -> torch.Tensor:
    check_pos_emb_args(weight, h, w)
    if (h, w) == tuple(weight.shape[:2]):
        return weight.flatten(0, 1).clone()  # the table itself, never a view of the caller's weight
    W = weight.to(F64).permute(2, 0, 1)[None]
    P = F_.interpolate(W, size=(h, w), mode="bicubic", align_corners=False)[0]
    return P.permute(1, 2, 0).flatten(0, 1).to(weight.dtype)


# ---------------------------------------------------------------------------------------------------
# The MoonViT encoder on packed images
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\mathrm{LN}(x)=\gamma\odot\frac{x-\mu}{\sqrt{\sigma^2+\epsilon}}+\beta",
      source="Ba et al. 2016; nn.LayerNorm (biased variance)")
def layer_norm(x, gamma, beta, eps: float = LN_EPS):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return gamma * (x - mu) / torch.sqrt(var + eps) + beta


LAYER_KEYS = ("ln1_w", "ln1_b", "qkv_w", "qkv_b", "o_w", "o_b", "ln2_w", "ln2_b", "fc1_w", "fc1_b", "fc2_w", "fc2_b")


def _check_weight(key: str, w, shape: tuple[int, ...]) -> None:
    """One weight of params: a floating tensor of the shape the widths D (and M) fix. The error names the weight
    ("params['fc1_w']"), a part of the argument params."""
    check_tensor(key, w, rank=len(shape))
    check_shape(key, w, shape, "as patch_w's D and fc1_w's M fix it")


def _layer_shapes(D: int, M: int) -> dict[str, tuple[int, ...]]:
    return {"ln1_w": (D,), "ln1_b": (D,), "qkv_w": (3 * D, D), "qkv_b": (3 * D,), "o_w": (D, D), "o_b": (D,),
            "ln2_w": (D,), "ln2_b": (D,), "fc1_w": (M, D), "fc1_b": (M,), "fc2_w": (D, M), "fc2_b": (D,)}


def check_encoder_params(params, P: int, heads: int) -> int:
    if not isinstance(params, dict) or not {"patch_w", "patch_b", "pos", "layers", "final_w", "final_b"} <= set(params):
        raise ArgumentError("params",
                            "params must be a dict with patch_w (D, P), patch_b, pos (H0, W0, D), layers (list of "
                            f"dicts with {', '.join(LAYER_KEYS)}), final_w, final_b")
    check_tensor("params['patch_w']", params["patch_w"], rank=2)
    D = params["patch_w"].shape[0]
    if tuple(params["patch_w"].shape) != (D, P):
        raise ArgumentError("params",
                            f"params['patch_w'] must have shape (D, P = {P}), got {tuple(params['patch_w'].shape)}")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or D % heads or (D // heads) % 4:
        raise ArgumentError("heads", f"heads must divide D = {D} into head dims that are multiples of 4, got {heads!r}")
    # every other weight's shape too: a bias of shape (1, D) broadcasts here, and is an error in nn.LayerNorm
    check_tensor("params['pos']", params["pos"], rank=3)
    check_dim("params['pos']", params["pos"], 2, D, "width D, as patch_w.shape[0]")
    for key in ("patch_b", "final_w", "final_b"):
        _check_weight(f"params[{key!r}]", params[key], (D,))
    if not isinstance(params["layers"], (list, tuple)):
        raise ArgumentError("params",
                            f"params['layers'] must be a list of dicts, got {type(params['layers']).__name__}")
    for layer in params["layers"]:
        if not isinstance(layer, dict) or set(LAYER_KEYS) - set(layer):
            raise ArgumentError("params", f"every layer must be a dict with {', '.join(LAYER_KEYS)}")
    for i, layer in enumerate(params["layers"]):
        check_tensor(f"params['layers'][{i}]['fc1_w']", layer["fc1_w"], rank=2)
        for key, shape in _layer_shapes(D, layer["fc1_w"].shape[0]).items():
            _check_weight(f"params['layers'][{i}][{key!r}]", layer[key], shape)
    return D


@spec(DOC, latex=r"\mathrm{GELU}_{\tanh}(x)=\tfrac x2\big(1+\tanh(\sqrt{2/\pi}(x+0.044715x^3))\big)",
      source="MoonViTConfig hidden_act gelu_pytorch_tanh (SigLIP)")
def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def check_moonvit_encode_args(patches, grid_hw, params, heads) -> tuple[list[tuple[int, int]], int]:
    """Validate the encoder's arguments; returns the grid as (h, w) pairs and the width D."""
    check_tensor("patches", patches, rank=2)
    grid = check_grid(grid_hw, patches.shape[0])
    return grid, check_encoder_params(params, patches.shape[1], heads)


@operation(
    DOC,
    latex=r"h^{(0)}=W_pX+b_p+P_{h_k,w_k},\ h\leftarrow h+\mathrm{Attn}_{\mathrm{cu}}"
          r"(\mathrm{RoPE}_{2D}(\mathrm{LN}(h))),\ h\leftarrow h+\mathrm{MLP}(\mathrm{LN}(h)),\ "
          r"\mathrm{out}=\mathrm{LN}(h)",
    source="Kimi-VL §2.1; moonvit.py MoonVisionPatchEmbed, MoonVitEncoderLayer (pre-LN, QKV bias, tanh-GELU MLP), "
           "MoonVitEncoder (final LayerNorm); attention is flash_attention.varlen_attention",
    returns="h",
    summary="MoonViT on NaViT-packed images. patches (T, P) flattened 14x14 patches of all images in raster order, "
            "grid_hw (N, 2) their (h, w), params a dict of weights (see check_encoder_params), heads -> (T, D) "
            "in patches' dtype. Attention is block-diagonal (cu_seqlens) with the 2D rotary embedding.",
    convention="The patch Conv2d (kernel = stride = patch) is the linear map of the flattened patch; every image's "
               "positions restart at (0, 0).",
    dtypes=("float64", "float32"),
    baseline="torch.naive",
    outputs=(Output("h", shape="(patches.shape[0], params['patch_w'].shape[0])", dtype="patches", device="patches"),),
)
def moonvit_encode(patches: torch.Tensor, grid_hw, params: dict, *, heads: int = 1) -> torch.Tensor:
    grid, D = check_moonvit_encode_args(patches, grid_hw, params, heads)
    p = {k: v.to(F64) for k, v in params.items() if isinstance(v, torch.Tensor)}
    h = patches.to(F64) @ p["patch_w"].T + p["patch_b"]
    h = h + torch.cat([pos_emb(p["pos"], gh, gw) for gh, gw in grid])
    positions, cu = grid_positions(grid).to(h.device), cu_seqlens(grid).to(h.device)
    T, dh = h.shape[0], D // heads
    for layer in params["layers"]:
        L = {k: v.to(F64) for k, v in layer.items()}
        a = layer_norm(h, L["ln1_w"], L["ln1_b"])
        q, k, v = (a @ L["qkv_w"].T + L["qkv_b"]).view(T, 3, heads, dh).unbind(1)
        o, _ = varlen_attention(rope_2d(q, positions), rope_2d(k, positions), v, cu, cu)
        h = h + o.reshape(T, D) @ L["o_w"].T + L["o_b"]
        m = gelu_tanh(layer_norm(h, L["ln2_w"], L["ln2_b"]) @ L["fc1_w"].T + L["fc1_b"])
        h = h + m @ L["fc2_w"].T + L["fc2_b"]
    return layer_norm(h, p["final_w"], p["final_b"]).to(patches.dtype)


def moonvit_magnitudes(patches: torch.Tensor, grid_hw, params: dict, *, heads: int = 1):
    """(mag, n): for every output entry the size of the terms the final LayerNorm cancels, as the error budget needs.

    The residual stream h sums products and vectors: the patch embedding's |x_p| |W_p|, the bias, the position
    table, and each block's |o| |W_o|, |m| |W_fc2| and biases. One rounding of each of those terms moves h by
    eps x their sum; the final LayerNorm subtracts the mean (the terms cancel) and divides by std(h), so an output
    entry moves by |final_w| x max_i (summed |terms| of h_i) / std(h). n: the float64 reference's longest reduction
    (patch width, hidden widths, the longest image's keys).
    """
    grid = check_grid(grid_hw, patches.shape[0])
    D = check_encoder_params(params, patches.shape[1], heads)
    p = {k: v.detach().to(F64) for k, v in params.items() if isinstance(v, torch.Tensor)}
    X = patches.detach().to(F64)
    pos = torch.cat([pos_emb(p["pos"], gh, gw) for gh, gw in grid])
    h = X @ p["patch_w"].T + p["patch_b"] + pos
    size = X.abs() @ p["patch_w"].abs().T + p["patch_b"].abs() + pos.abs()
    positions, cu = grid_positions(grid).to(h.device), cu_seqlens(grid).to(h.device)
    T, dh = h.shape[0], D // heads
    widths = [patches.shape[1], D]
    for layer in params["layers"]:
        L = {k: v.detach().to(F64) for k, v in layer.items()}
        a = layer_norm(h, L["ln1_w"], L["ln1_b"])
        q, k, v = (a @ L["qkv_w"].T + L["qkv_b"]).view(T, 3, heads, dh).unbind(1)
        o, _ = varlen_attention(rope_2d(q, positions), rope_2d(k, positions), v, cu, cu)
        o = o.reshape(T, D)
        h = h + o @ L["o_w"].T + L["o_b"]
        size = size + o.abs() @ L["o_w"].abs().T + L["o_b"].abs()
        m = gelu_tanh(layer_norm(h, L["ln2_w"], L["ln2_b"]) @ L["fc1_w"].T + L["fc1_b"])
        h = h + m @ L["fc2_w"].T + L["fc2_b"]
        size = size + m.abs() @ L["fc2_w"].abs().T + L["fc2_b"].abs()
        widths.append(L["fc1_w"].shape[0])
    std = torch.sqrt(((h - h.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True) + LN_EPS)
    mag = p["final_w"].abs() * size.amax(-1, keepdim=True) / std + p["final_b"].abs()
    return mag, max(widths) + max(gh * gw for gh, gw in grid)


# ---------------------------------------------------------------------------------------------------
# The 2x2 patch merger and the projector
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"m_{a,b}=\big(x_{2a,2b},\,x_{2a,2b+1},\,x_{2a+1,2b},\,x_{2a+1,2b+1}\big)",
      source="moonvit.py patch_merger (view (h/2, 2, w/2, 2, D), permute (0, 2, 1, 3, 4))")
def merge_index(h: int, w: int) -> torch.Tensor:
    """(h w / 4, 4) raster indices of the tokens each merged token gathers."""
    a, b = torch.meshgrid(torch.arange(h // 2), torch.arange(w // 2), indexing="ij")
    rows = torch.stack((2 * a, 2 * a, 2 * a + 1, 2 * a + 1), -1)
    cols = torch.stack((2 * b, 2 * b + 1, 2 * b, 2 * b + 1), -1)
    return (rows * w + cols).reshape(-1, 4)


def check_patch_merge_args(x, grid_hw) -> list[tuple[int, int]]:
    check_tensor("x", x, rank=2)
    return check_grid(grid_hw, x.shape[0], even=True)


@operation(
    DOC,
    latex=r"m^{(k)}_{a,b}=\big(x_{2a,2b},x_{2a,2b+1},x_{2a+1,2b},x_{2a+1,2b+1}\big)\ \text{for each image } k",
    source="Kimi-VL §2.1 (pixel shuffle, 2x2 downsampling); moonvit.py patch_merger",
    dtypes=DTYPES,
    returns="merged",
    summary="Group each image's 2x2 patch windows. x (T, D) packed raster-order tokens, grid_hw (N, 2) with even "
            "h, w -> (T/4, 4, D) in x's dtype, images in order, windows row-major, the 4 tokens of a window "
            "row-major.",
    outputs=(Output("merged", shape="(x.shape[0] // 4, 4, x.shape[1])", dtype="x", device="x"),),
)
def patch_merge(x: torch.Tensor, grid_hw) -> torch.Tensor:
    grid = check_patch_merge_args(x, grid_hw)
    out, start = [], 0
    for h, w in grid:
        img = x[start:start + h * w].view(h // 2, 2, w // 2, 2, x.shape[1])
        out.append(img.permute(0, 2, 1, 3, 4).reshape(h * w // 4, 4, x.shape[1]))
        start += h * w
    return torch.cat(out)


@spec(DOC, latex=r"\mathrm{GELU}(x)=x\,\Phi(x)=\tfrac x2\big(1+\mathrm{erf}(x/\sqrt2)\big)",
      source="KimiVLMultiModalProjector (nn.GELU(), exact erf); Hendrycks & Gimpel 2016")
def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def check_projector_args(x, ln_w, ln_b, w1, b1, w2, b2) -> None:
    """The tokens and the weights (grid_hw is patch_merge's to check)."""
    check_tensor("x", x, rank=2)
    D = x.shape[1]
    for name, t, shape in (("ln_w", ln_w, (D,)), ("ln_b", ln_b, (D,)), ("w1", w1, (4 * D, 4 * D)),
                           ("b1", b1, (4 * D,))):
        check_tensor(name, t)
        if tuple(t.shape) != shape:
            raise ArgumentError(name, f"{name} must have shape {shape}, got {tuple(t.shape)}")
    check_tensor("w2", w2, rank=2)
    if w2.shape[1] != 4 * D:
        raise ArgumentError("w2", f"w2 must have shape (D_text, 4 D = {4 * D}), got {tuple(w2.shape)}")
    check_tensor("b2", b2)  # after w2, whose shape it takes (a w2 that is no tensor has none)
    if tuple(b2.shape) != (w2.shape[0],):
        raise ArgumentError("b2", f"b2 must have shape {(w2.shape[0],)}, got {tuple(b2.shape)}")


@operation(
    DOC,
    latex=r"z=W_2\,\mathrm{GELU}\big(W_1\,\mathrm{vec}(\mathrm{LN}(m_{a,b}))+b_1\big)+b_2,\quad "
          r"\mathrm{LN}\text{ over each patch's }D",
    source="Kimi-VL §2.1 (MLP projector after pixel shuffle); KimiVLMultiModalProjector (pre_norm LayerNorm(1152, "
           "eps 1e-5) per patch, view to 4608, Linear, GELU, Linear)",
    dtypes=DTYPES,
    returns="tokens",
    summary="The projector. x (T, D) MoonViT output, grid_hw (N, 2) even, ln_w/ln_b (D), w1 (4D, 4D), b1 (4D), "
            "w2 (D_text, 4D), b2 (D_text), eps -> (T/4, D_text) in x's dtype: LayerNorm per patch, then the 2x2 "
            "merge, then Linear + exact GELU + Linear.",
    convention="LayerNorm over each patch's D (1152), not over the concatenated 4D; exact (erf) GELU.",
    baseline="torch.naive",
    outputs=(Output("tokens", shape="(x.shape[0] // 4, w2.shape[0])", dtype="x", device="x"),),
)
def projector(x, grid_hw, ln_w, ln_b, w1, b1, w2, b2, *, eps: float = LN_EPS):
    check_projector_args(x, ln_w, ln_b, w1, b1, w2, b2)
    D = x.shape[1]
    m = patch_merge(x.to(F64), grid_hw)  # checks grid_hw
    m = layer_norm(m, ln_w.to(F64), ln_b.to(F64), eps).reshape(-1, 4 * D)
    z = gelu(m @ w1.to(F64).T + b1.to(F64)) @ w2.to(F64).T + b2.to(F64)
    return z.to(x.dtype)


# ---------------------------------------------------------------------------------------------------
# Claims (catalogue/kimi_vl.md "Checkable properties", the conservation laws, and the contracts)
# ---------------------------------------------------------------------------------------------------

ROUTE, MOE, DISPATCH, COMBINE = (f"{DOC}.{n}" for n in ("route", "moe", "dispatch", "combine"))
LOSS, UPDATE, ROPE, POS = (f"{DOC}.{n}" for n in ("balance_loss", "bias_update", "rope_2d", "pos_emb"))
ENCODE, MERGE, PROJ = (f"{DOC}.{n}" for n in ("moonvit_encode", "patch_merge", "projector"))

claim(DOC, "route_conservation", kind="exact", operations=(ROUTE,),
      statement="Every token goes to exactly top_k distinct experts, all inside its kept groups (n_group = 1: plain "
                "top-k of s + b); per-expert token counts sum to T x top_k; weights are >= 0 and, with "
                "norm_topk_prob, sum to routed_scaling_factor (to the K + 2 roundings of the normalisation).",
      source="catalogue properties 1 and 4; DeepSeek-V3 eqs. 13-16")
claim(DOC, "route_spec", kind="budget", operations=(ROUTE,),
      statement="The selected experts equal the spec's (as sets; draws whose selection margin is within what the "
                "router's float32 rounding may move it are rejected) and the weights are within the error budget of "
                "the float64 spec.",
      source="DeepSeek-V3 §2.1.2; transformers DeepseekV3TopkRouter")
claim(DOC, "route_bias_selects_only", kind="exact", operations=(ROUTE,),
      statement="The bias only selects: given the selection, the weights are the normalised, scaled unbiased "
                "scores s (not s + b), so a bias that changes no selection changes no weight.",
      source="catalogue property 2; vLLM PR #12002 (biased scores used as weights)")
claim(DOC, "route_bias_shift", kind="exact", operations=(ROUTE,),
      statement="Adding one constant to every bias changes neither the selection nor the weights (true with -inf "
                "masking of dropped groups; false with 0.0 masking once biased scores go negative).",
      source="catalogue property 3; vLLM PR #13474, SGLang PR #3705")
claim(DOC, "route_relabel", kind="identity", operations=(ROUTE,),
      statement="Relabelling experts consistently (a permutation of groups and of experts within each group, "
                "applied to the logits and the bias) relabels the selection and leaves the weights unchanged.",
      source="catalogue property 6")
claim(DOC, "route_known_answers", kind="known-answer", operations=(ROUTE,),
      statement="The catalogue's vectors: 8 logits with bias -> experts {0, 2}, weights [1.433175, 1.012825] "
                "(rsf 2.446); {0, 5} with b_5 = 0.6; 4 groups of 2 -> {0, 2, 3}; biases all -1 but b_6 = -0.2 -> "
                "{6, 0, 7} with -inf masking; the Moonlight preset's weights sum to 2.446.",
      source="catalogue/kimi_vl.md, known answers (computed)")
claim(DOC, "moe_layer", kind="budget", operations=(MOE,),
      statement="The MoE layer (shared SwiGLU experts plus routed experts weighted by the router) is within the "
                "error budget of the float64 spec: 2 x the per-token loop's error in the same dtype + floor.",
      source="DeepSeek-V3 eq. 12; transformers DeepseekV3MoE")
claim(DOC, "moe_identical_experts", kind="identity", operations=(MOE,),
      statement="With identical routed experts E_i = f and norm_topk_prob, the routed output is "
                "routed_scaling_factor x f(x) (plus the shared experts), whatever the routing.",
      source="catalogue property 5")
claim(DOC, "moe_relabel", kind="identity", operations=(MOE,),
      statement="Relabelling experts consistently (router rows, bias, expert weights; groups kept whole) leaves "
                "the layer's output unchanged (within the error budget).",
      source="catalogue property 6")
claim(DOC, "moe_bias_no_gradient", kind="exact", operations=(MOE,),
      statement="The correction bias gets no gradient from the layer's output: it selects, it never weighs.",
      source="catalogue property 2; DeepSeek-V3 §2.1.2 (the bias is updated by the balancing rule, not by SGD)")
claim(DOC, "dispatch_bijection", kind="exact", operations=(DISPATCH,),
      statement="Dispatch is a bijection from the T x K slots onto the expert buffers: positions are a permutation "
                "of 0..TK-1, slot (t, j) lands in expert indices[t, j]'s buffer, buffers are in expert order with "
                "counts summing to T K, and x_sorted[positions[t, j]] is bit-identical to x[t] (stable order).",
      source="the sort/permute MoE; the issue's 'MoE routing conservation'")
claim(DOC, "combine_inverts_dispatch", kind="budget", operations=(COMBINE, DISPATCH),
      statement="Combine inverts dispatch: combine(dispatch(x)) with identity experts returns (sum_j w_tj) x_t, "
                "and combine is within the error budget of the float64 weighted sum.",
      source="the issue's 'with identity experts the layer returns (sum of weights) x'")
claim(DOC, "balance_loss_uniform", kind="known-answer", operations=(LOSS,),
      statement="At perfectly uniform routing the DeepSeek-V3 sequence-wise loss and the Switch loss equal alpha, "
                "and the Mixtral/HF form equals top_k x alpha (to the T + 2E + 4 roundings of its sums); on any "
                "routing every form is within the budget of its float64 formula.",
      source="catalogue property 7; DeepSeek-V3 eqs. 17-20; Switch eq. 4; load_balancing_loss_func")
claim(DOC, "bias_update_direction", kind="exact", operations=(UPDATE,),
      statement="One aux-loss-free step lowers an overloaded expert's bias by exactly gamma, raises an underloaded "
                "one's by gamma and leaves an expert at the mean load unchanged.",
      source="DeepSeek-V3 §2.1.2")
claim(DOC, "rope_norm", kind="exact", operations=(ROPE,),
      statement="The 2D rotary embedding preserves the norm of every head vector (a rotation; float32: a few ulps) "
                "and is the identity at position (0, 0) (bit-identical).",
      source="catalogue property 8; RoFormer (Su et al. 2021) §3.4")
claim(DOC, "rope_relative", kind="identity", operations=(ROPE,),
      statement="<R_p q, R_p' k> depends only on p - p' in both axes: shifting every position by one (dr, dc) "
                "leaves all scores unchanged (to the rounding of the rotation angles, (2 max position + 3) u "
                "relative per rotated vector).",
      source="catalogue property 8")
claim(DOC, "rope_layout", kind="known-answer", operations=(ROPE,),
      statement="Layout: adjacent reals are complex pairs and x (column) comes first: for d = 8 the token "
                "(row 1, column 2) rotates its pairs by [2, 1, 0.02, 0.01] and (2, 1) by [1, 2, 0.01, 0.02]; on "
                "random inputs the rotation is within the error budget of the float64 spec.",
      source="catalogue known answers; moonvit.py (x_cis first, despite the docstring)")
claim(DOC, "pos_emb_interpolation", kind="exact", operations=(POS,),
      statement="The interpolated position table is the table itself (raster order) at its own size, and within "
                "the error budget of the float64 bicubic resampling at other sizes.",
      source="Learnable2DInterpPosEmb; catalogue (identity at 64 x 64)")
claim(DOC, "packing_equals_separate", kind="budget", operations=(ENCODE,),
      statement="Encoding several images packed (cu_seqlens, block-diagonal attention) gives, for each image, its "
                "encoding alone (within the error budget).",
      source="catalogue property 9; NaViT packing")
claim(DOC, "packing_isolation", kind="exact", operations=(ENCODE,),
      statement="Changing one packed image never changes another image's tokens (bit-identical).",
      source="catalogue property 9")
claim(DOC, "merger_bijection", kind="exact", operations=(MERGE,),
      statement="The 2x2 merger gathers every token exactly once (a bijection onto all h w tokens of each image), "
                "outputs sum h w / 4 tokens, and for h = 2, w = 4 gathers raster indices [0, 1, 4, 5], [2, 3, 6, 7].",
      source="catalogue property 10 and known answers; moonvit.py patch_merger")
claim(DOC, "projector_spec", kind="budget", operations=(PROJ,),
      statement="The projector (LayerNorm per patch, 2x2 merge, Linear, exact GELU, Linear) is within the error "
                "budget of the float64 spec and emits sum h w / 4 tokens.",
      source="KimiVLMultiModalProjector; catalogue bug list (QuickGELU in SGLang; LayerNorm over 4D)")
claim(DOC, "kimi_vl_contract", kind="contract", operations=(ROUTE, MOE, DISPATCH, ROPE, MERGE),
      statement="Malformed input (top_k beyond the kept groups, n_group not dividing E, a bias of the wrong length, "
                "expert weights of the wrong shape, odd h or w for the merger, a head dim not divisible by 4, "
                "indices out of range) is rejected with an error naming the argument.",
      source="design.md (bad input)")


# ---------------------------------------------------------------------------------------------------
# Domains: every argument over its whole range (eqspec/domain.py); the differential tests draw from them
# (the routing operations' domains are declared in specs/moe_routing.py)
# ---------------------------------------------------------------------------------------------------

def _grid(*, even: bool = False, max_side: int = 5):
    """1 to 3 images of h x w patches: sides of 1 (even: 2), non-square grids, the same image twice."""
    def build(gen, case):
        sides = torch.tensor([2, 4, 6]) if even else torch.arange(1, max_side + 1)
        n = int(torch.randint(1, 4, (), generator=gen))
        pairs = [tuple(sides[torch.randint(0, len(sides), (2,), generator=gen)].tolist()) for _ in range(n)]
        if n > 1 and int(torch.randint(0, 3, (), generator=gen)) == 0:
            pairs[1] = pairs[0]
        return pairs
    return Built(build, note=f"{'even ' if even else ''}grids (h, w) of 1 to 3 images")


def _grid_hw(gen, case):
    """The drawn grid as a list of pairs or as an int tensor (N, 2) (int64 or int32)."""
    kind = int(torch.randint(0, 3, (), generator=gen))
    if kind == 0:
        return [tuple(p) for p in case["grid"]]
    return torch.tensor(case["grid"], dtype=(torch.int64, torch.int32)[kind - 1])


def _tokens(dim: str, scale: str = "scale"):
    return Built(lambda gen, case: torch.randn(sum(h * w for h, w in case["grid"]), case[dim], generator=gen,
                                               dtype=F64) * case[scale], note=f"(sum h w, {dim}) packed tokens")


def _rope_positions(gen, case):
    """(T, 2) (row, column): the raster positions of packed images (restarting at (0, 0)), or far positions (a
    large image's last rows and columns, up to 512) - int64 or int32."""
    if case["far"]:
        pos = torch.randint(0, 513, (case["T"], 2), generator=gen)
        pos[0] = torch.tensor([512, 512]) if case["T"] > 1 else pos[0]
    else:
        pos = grid_positions(case["grid"])
    return pos.to((torch.int64, torch.int32)[int(torch.randint(0, 2, (), generator=gen))])


REGISTRY.attach_domain(ROPE, Domain(
    sizes=dict(grid=_grid(max_side=6), far=Choice((False, True)), heads=Int(1, 3, edges=(1,)),
               d=Choice((4, 8, 12, 16, 32, 64)), scale=Real(1e-3, 1e3, edges=(1.0,), log=True),
               T=Built(lambda gen, case: sum(h * w for h, w in case["grid"]), note="sum h w")),
    args=dict(x=Built(lambda gen, case: torch.randn(case["T"], case["heads"], case["d"], generator=gen, dtype=F64)
                      * case["scale"], note="(T, H, d) head vectors"),
              positions=Built(_rope_positions, note="(T, 2) (row, column)"),
              theta=Optional(Real(1.5, 1e6, edges=(THETA, 100.0, 2.0), log=True))),
))


def _pos_table(gen, case):
    return torch.randn(case["H0"], case["W0"], case["D"], generator=gen, dtype=F64) * case["scale"]


REGISTRY.attach_domain(POS, Domain(
    sizes=dict(H0=Int(1, 8, edges=(1, 2)), W0=Int(1, 8, edges=(1,)), D=Int(1, 6, edges=(1,)),
               same=Choice((False, True)), scale=Real(1e-2, 1e2, edges=(1.0,), log=True)),
    args=dict(weight=Built(_pos_table, note="(H0, W0, D) position table"),
              h=Int("H0 if same else 1", "H0 if same else 20", edges=(1, 2)),
              w=Int("W0 if same else 1", "W0 if same else 20", edges=(1,))),
    large=dict(H0=64, W0=64, D=16),
))


def _encoder_params(gen, case) -> dict:
    """MoonViT weights: D wide, ``layers`` blocks of MLP width M, an (H0, W0) position table; LayerNorm gains
    around 1, biases small."""
    D, P, M = case["D"], case["P"], case["M"]

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen, dtype=F64) * scale

    params = {"patch_w": r(D, P, scale=1 / math.sqrt(P)), "patch_b": r(D, scale=0.1),
              "pos": r(case["H0"], case["W0"], D, scale=0.5), "final_w": 1 + r(D, scale=0.1),
              "final_b": r(D, scale=0.1), "layers": []}
    for _ in range(case["layers"]):
        params["layers"].append({
            "ln1_w": 1 + r(D, scale=0.1), "ln1_b": r(D, scale=0.1),
            "qkv_w": r(3 * D, D, scale=case["sharp"] / math.sqrt(D)), "qkv_b": r(3 * D, scale=0.1),
            "o_w": r(D, D, scale=1 / math.sqrt(D)), "o_b": r(D, scale=0.1),
            "ln2_w": 1 + r(D, scale=0.1), "ln2_b": r(D, scale=0.1),
            "fc1_w": r(M, D, scale=1 / math.sqrt(D)), "fc1_b": r(M, scale=0.1),
            "fc2_w": r(D, M, scale=1 / math.sqrt(M)), "fc2_b": r(D, scale=0.1)})
    return params


REGISTRY.attach_domain(ENCODE, Domain(
    sizes=dict(grid=_grid(max_side=4), D=Choice((8, 16)), P=Int(1, 12, edges=(1,)), M=Int(1, 16, edges=(1,)),
               H0=Int(1, 4, edges=(1,)), W0=Int(1, 4, edges=(1,)), layers=Int(0, 2, edges=(0, 1)),
               sharp=Real(0.1, 4.0, edges=(1.0,), log=True), scale=Real(0.01, 10.0, edges=(1.0,), log=True)),
    args=dict(patches=_tokens("P"), grid_hw=Built(_grid_hw, note="list of pairs or int tensor (N, 2)"),
              params=Built(_encoder_params, note="MoonViT weights"), heads=Optional(Choice((1, 2, 4)))),
    where=lambda c: c["heads"] is OMIT or c["D"] % (4 * c["heads"]) == 0,
))

REGISTRY.attach_domain(MERGE, Domain(
    sizes=dict(grid=_grid(even=True), D=Int(1, 8, edges=(1,)), scale=Real(1e-3, 1e3, edges=(1.0,), log=True)),
    args=dict(x=_tokens("D"), grid_hw=Built(_grid_hw, note="list of pairs or int tensor (N, 2)")),
    exact=("merged",),
))


def _projector_x(gen, case):
    """(T, D) tokens of spread ``scale`` around ``center``; some patches constant (variance 0: eps decides)."""
    T = sum(h * w for h, w in case["grid"])
    x = torch.randn(T, case["D"], generator=gen, dtype=F64) * case["scale"] + case["center"]
    flat = torch.rand(T, generator=gen) < 0.2
    return torch.where(flat[:, None], x[:, :1], x)


def _linear(rows: str, cols: str, scale: float = 1.0):
    return Built(lambda gen, case: torch.randn(resolve(rows, case), resolve(cols, case), generator=gen, dtype=F64)
                 * (scale / math.sqrt(resolve(cols, case))), note=f"({rows}, {cols}) weight")


def _vector(n: str, center: float = 0.0, scale: float = 0.1):
    return Built(lambda gen, case: center + torch.randn(resolve(n, case), generator=gen, dtype=F64) * scale,
                 note=f"({n}) vector")


REGISTRY.attach_domain(PROJ, Domain(
    sizes=dict(grid=_grid(even=True), D=Int(1, 8, edges=(1,)), Dt=Int(1, 8, edges=(1,)),
               scale=Real(1e-3, 1e2, edges=(1.0,), log=True), center=Real(-5.0, 5.0, edges=(0.0,))),
    args=dict(x=Built(_projector_x, note="(T, D) tokens, some constant"),
              grid_hw=Built(_grid_hw, note="list of pairs or int tensor (N, 2)"),
              ln_w=_vector("D", 1.0), ln_b=_vector("D"), w1=_linear("4 * D", "4 * D"), b1=_vector("4 * D"),
              w2=_linear("Dt", "4 * D"), b2=_vector("Dt"),
              eps=Optional(Real(1e-12, 0.1, edges=(LN_EPS, 1e-6), log=True))),
))
