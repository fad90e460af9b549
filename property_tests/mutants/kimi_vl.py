"""Mutants of the Kimi-VL document: the catalogue's plausible bugs (catalogue/kimi_vl.md, list 2) and the ways a
sort/permute MoE or a packed vision encoder goes wrong.

Each is the float64 computation of the spec with one line wrong (``bug`` names it), so nothing but the bug
separates it from the spec. Each mutant lists the claims whose property tests must catch it.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from specs import kimi_vl as kv
from specs import moe_routing as mr
from specs.flash_attention import varlen_attention

from . import mutant

F64 = torch.float64
_D = "kimi_vl."


# --- the router and the layer ----------------------------------------------------------------------------

def _route(logits, bias, config, *, bug=""):
    if bug != "unchecked":
        config = mr.check_route_args(logits, bias, config)
    s = mr.affinity(logits.to(F64), config.scoring)
    b = bias.to(F64).roll(1) if bug == "bias_rolled" else bias.to(F64)
    c = s + b
    T, E = c.shape
    if config.n_group > 1:
        grouped = c.view(T, config.n_group, -1)
        g = grouped.amax(-1) if bug == "max_group_score" else grouped.topk(2, -1).values.sum(-1)
        kept = g.topk(config.topk_group, -1).indices
        keep = torch.zeros(T, config.n_group, dtype=torch.bool).scatter_(1, kept, True)
        keep = keep.repeat_interleave(E // config.n_group, 1)
        c = c.masked_fill(~keep, 0.0 if bug == "zero_group_mask" else -math.inf)
    indices = c.topk(config.top_k, -1).indices
    w = (c if bug == "biased_weights" else s).gather(1, indices)
    if config.norm_topk_prob and bug != "ignores_norm":
        w = w / (w.sum(-1, keepdim=True) + mr.NORM_GUARD)
    rsf = config.routed_scaling_factor
    return indices, w * (rsf * rsf if bug == "rsf_twice" else rsf)


def _moe(x, w_router, bias, w_gate, w_up, w_down, config, shared=None, *, bug=""):
    if bug != "unchecked":
        config = mr.check_moe_args(x, w_router, bias, w_gate, w_up, w_down, config, shared)
    X = x.to(F64)
    route_bug = bug if bug in ("biased_weights", "bias_rolled", "ignores_norm") else ""
    indices, weights = _route(X @ w_router.to(F64).T, bias, config, bug=route_bug)
    Wg, Wu, Wd = (w.to(F64) for w in (w_gate, w_up, w_down))
    y = torch.zeros_like(X)
    for t in range(X.shape[0]):
        for j in range(config.top_k):
            i = int(indices[t, j])
            y[t] = y[t] + weights[t, j] * mr.swiglu(X[t], Wg[i], Wu[i], Wd[i])
    if bug == "rsf_twice":
        y = y * config.routed_scaling_factor
    if shared is not None:
        Sg, Su, Sd = (w.to(F64) for w in shared)
        if bug == "shared_width_forgotten":  # one shared expert of moe_intermediate_size, not n_shared of them
            F_ = w_gate.shape[1]
            Sg, Su, Sd = Sg[:F_], Su[:F_], Sd[:, :F_]
        y = y + mr.swiglu(X, Sg, Su, Sd)
    return y.to(x.dtype)


# --- dispatch and combine ------------------------------------------------------------------------------------

def _dispatch(x, indices, n_experts, *, bug=""):
    if bug == "unchecked":  # no range check: an index >= n_experts grows the counts instead of being rejected
        indices = indices.clamp(max=n_experts - 1)
    mr.check_indices(indices, n_experts, x.shape[0])
    T, K = indices.shape
    counts = torch.bincount(indices.reshape(-1), minlength=n_experts)
    if bug == "token_order":  # no sort: slot (t, j) stays at t K + j
        positions = torch.arange(T * K).view(T, K)
    else:  # unstable: the last token first inside each expert's buffer
        positions, _ = mr.dispatch_positions(indices.flip(0), n_experts)
        positions = positions.flip(0)
    x_sorted = torch.empty(T * K, x.shape[1], dtype=x.dtype)
    x_sorted[positions.reshape(-1)] = x.repeat_interleave(K, 0)
    return x_sorted, counts, positions


def _combine(y_sorted, positions, weights, *, bug=""):
    T, K = positions.shape
    Y, w = y_sorted.to(F64), weights.to(F64)
    if bug == "slot_shift":  # the weight of slot j applied to slot j + 1
        w = w.roll(1, dims=1)
    rows = Y.view(T, K, -1) if bug == "ignores_positions" else Y[positions]
    return (w[:, :, None] * rows).sum(1).to(y_sorted.dtype)


# --- balance losses and the bias update ---------------------------------------------------------------------

def _balance_loss(scores, indices, *, form="deepseek_v3", alpha=1.0, bug=""):
    if bug == "mixtral_normalisation" and form == "deepseek_v3":
        form = "mixtral"  # the HF count (not divided by K) used for DeepSeek's f_i: top_k x alpha at balance
    value = mr.balance_loss(scores, indices, form=form, alpha=alpha)
    if bug == "mixtral_divided_by_k" and form == "mixtral":
        value = value / indices.shape[1]
    return value


def _bias_update(bias, counts, gamma=0.001, *, bug=""):
    load = counts.to(F64)
    if bug == "sign_flipped":
        return (bias.to(F64) + gamma * torch.sign(load - load.mean())).to(bias.dtype)
    return (bias.to(F64) - gamma * torch.sign(load)).to(bias.dtype)  # "against zero": every used expert drops


# --- MoonViT ------------------------------------------------------------------------------------------------

def _rope(x, positions, *, theta=kv.THETA, bug=""):
    if bug != "unchecked":
        kv.check_rope_args(x, positions, theta)
    T, H, d = x.shape
    X = x.to(F64)
    i = torch.arange(d // 4, dtype=F64)
    omega = theta ** ((-2.0 if bug == "freq_2i" else -4.0) * i / d)
    r, c = positions[:, :1].to(F64), positions[:, 1:].to(F64)
    first, second = (r, c) if bug == "y_first" else (c, r)
    phi = torch.stack((first * omega, second * omega), -1).reshape(T, 1, d // 2)
    if bug == "half_split":  # Qwen2-VL's rotate_half layout: pairs (j, j + d/2), angles [w | h | w | h]
        ang = torch.cat((c * omega, r * omega), -1)[:, None, :]
        a, b = X[..., : d // 2], X[..., d // 2:]
        out = torch.cat((a * torch.cos(ang) - b * torch.sin(ang), b * torch.cos(ang) + a * torch.sin(ang)), -1)
        return out.to(x.dtype)
    re, im = X[..., 0::2], X[..., 1::2]
    sign = 1.0 if bug == "sin_sign" else -1.0
    out = torch.stack((re * torch.cos(phi) + sign * im * torch.sin(phi), re * torch.sin(phi) + im * torch.cos(phi)), -1)
    return out.reshape(x.shape).to(x.dtype)


def _pos_emb(weight, h, w, *, bug=""):
    if bug == "column_major":
        W = weight.to(F64).permute(2, 0, 1)[None]
        P = W[0] if (h, w) == tuple(weight.shape[:2]) else F.interpolate(W, size=(h, w), mode="bicubic")[0]
        return P.permute(2, 1, 0).flatten(0, 1).to(weight.dtype)  # (w, h) raster: the grid transposed
    W = weight.to(F64).permute(2, 0, 1)[None]
    P = F.interpolate(W, size=(h, w), mode="bilinear", align_corners=False)[0]
    return P.permute(1, 2, 0).flatten(0, 1).to(weight.dtype)


def _encode(patches, grid_hw, params, *, heads=1, bug=""):
    grid = kv.check_grid(grid_hw, patches.shape[0])
    D = kv.check_encoder_params(params, patches.shape[1], heads)
    p = {k: v.to(F64) for k, v in params.items() if isinstance(v, torch.Tensor)}
    h = patches.to(F64) @ p["patch_w"].T + p["patch_b"]
    h = h + torch.cat([kv.pos_emb(p["pos"], gh, gw) for gh, gw in grid])
    T, dh = h.shape[0], D // heads
    if bug == "flat_positions":  # (row, column) from the packed index with the first image's width
        t, w0 = torch.arange(T), grid[0][1]
        positions = torch.stack((t // w0, t % w0), -1)
    else:
        positions = kv.grid_positions(grid)
    cu = torch.tensor([0, T], dtype=torch.int32) if bug == "global_attention" else kv.cu_seqlens(grid)
    for layer in params["layers"]:
        L = {k: v.to(F64) for k, v in layer.items()}
        a = kv.layer_norm(h, L["ln1_w"], L["ln1_b"])
        q, k, v = (a @ L["qkv_w"].T + L["qkv_b"]).view(T, 3, heads, dh).unbind(1)
        o, _ = varlen_attention(kv.rope_2d(q, positions), kv.rope_2d(k, positions), v, cu, cu)
        h = h + o.reshape(T, D) @ L["o_w"].T + L["o_b"]
        m = kv.gelu_tanh(kv.layer_norm(h, L["ln2_w"], L["ln2_b"]) @ L["fc1_w"].T + L["fc1_b"])
        h = h + m @ L["fc2_w"].T + L["fc2_b"]
    return kv.layer_norm(h, p["final_w"], p["final_b"]).to(patches.dtype)


def _merge(x, grid_hw, *, bug=""):
    if bug == "no_even_check":  # odd sides silently floored
        grid = kv.check_grid(grid_hw, x.shape[0])
        out, start = [], 0
        for h, w in grid:
            img = x[start:start + h * w].view(h, w, -1)[: h // 2 * 2, : w // 2 * 2]
            out.append(img.reshape(h // 2, 2, w // 2, 2, -1).permute(0, 2, 1, 3, 4).reshape(-1, 4, x.shape[1]))
            start += h * w
        return torch.cat(out)
    kv.check_grid(grid_hw, x.shape[0], even=True)
    if bug == "consecutive":  # Qwen2-VL's view(-1, 4 D): right only after its processor's window reordering
        return x.reshape(-1, 4, x.shape[1])
    out, start = [], 0
    for h, w in kv.check_grid(grid_hw):  # column-major inside each window
        img = x[start:start + h * w].view(h // 2, 2, w // 2, 2, x.shape[1])
        out.append(img.permute(0, 2, 3, 1, 4).reshape(h * w // 4, 4, x.shape[1]))
        start += h * w
    return torch.cat(out)


def _projector(x, grid_hw, ln_w, ln_b, w1, b1, w2, b2, *, eps=kv.LN_EPS, bug=""):
    D = x.shape[1]
    m = kv.patch_merge(x.to(F64), grid_hw)
    if bug == "ln_after_concat":
        m = m.reshape(-1, 4 * D)
        m = kv.layer_norm(m, ln_w.to(F64).repeat(4), ln_b.to(F64).repeat(4), eps)
    else:
        m = kv.layer_norm(m, ln_w.to(F64), ln_b.to(F64), eps).reshape(-1, 4 * D)
    z = m @ w1.to(F64).T + b1.to(F64)
    if bug == "quick_gelu":  # SGLang kimi_vl.py overwrites GELU with QuickGELU
        z = z * torch.sigmoid(1.702 * z)
    else:  # tanh approximation instead of the exact erf
        z = kv.gelu_tanh(z)
    return (z @ w2.to(F64).T + b2.to(F64)).to(x.dtype)


_BUGS = {  # name -> (operation, function, bug, claims, notes)
    "route_biased_weights": ("route", _route, "biased_weights",
                             ("route_spec", "route_bias_selects_only", "route_known_answers"),
                             "gate weights from s + b instead of s (vLLM PR #12002)"),
    "route_zero_group_mask": ("route", _route, "zero_group_mask",
                              ("route_conservation", "route_bias_shift", "route_known_answers"),
                              "dropped groups masked with 0.0 instead of -inf (vLLM PR #13474, SGLang PR #3705)"),
    "route_max_group_score": ("route", _route, "max_group_score", ("route_spec",),
                              "group score = max of the group instead of the top-2 sum (vLLM #13474)"),
    "route_bias_rolled": ("route", _route, "bias_rolled", ("route_relabel", "route_spec"),
                          "bias applied to the neighbouring expert (off by one)"),
    "route_rsf_twice": ("route", _route, "rsf_twice", ("route_conservation", "route_known_answers"),
                        "routed_scaling_factor applied twice"),
    "moe_rsf_twice": ("moe", _moe, "rsf_twice", ("moe_layer", "moe_identical_experts"),
                      "routed_scaling_factor applied in the router and again on the experts' sum"),
    "moe_shared_width_forgotten": ("moe", _moe, "shared_width_forgotten", ("moe_layer",),
                                   "shared expert of width moe_intermediate_size, not n_shared x that"),
    "moe_biased_weights": ("moe", _moe, "biased_weights", ("moe_bias_no_gradient", "moe_layer"),
                           "weights from the biased scores: the bias gets a gradient"),
    "moe_ignores_norm": ("moe", _moe, "ignores_norm", ("moe_identical_experts",),
                         "norm_topk_prob ignored: the top-k scores are never normalised"),
    "moe_bias_rolled": ("moe", _moe, "bias_rolled", ("moe_relabel",), "bias applied to the neighbouring expert"),
    "dispatch_token_order": ("dispatch", _dispatch, "token_order", ("dispatch_bijection",),
                             "slots left in token order: not grouped into expert buffers"),
    "dispatch_unstable": ("dispatch", _dispatch, "unstable", ("dispatch_bijection",),
                          "tokens in reverse order inside each expert's buffer (an unstable sort)"),
    "combine_slot_shift": ("combine", _combine, "slot_shift", ("combine_inverts_dispatch",),
                           "weight of slot j applied to the output of slot j + 1"),
    "combine_ignores_positions": ("combine", _combine, "ignores_positions", ("combine_inverts_dispatch",),
                                  "reads the expert outputs in token order, ignoring the dispatch positions"),
    "loss_mixtral_normalisation": ("balance_loss", _balance_loss, "mixtral_normalisation",
                                   ("balance_loss_uniform",), "DeepSeek's f_i without the division by K"),
    "loss_mixtral_divided_by_k": ("balance_loss", _balance_loss, "mixtral_divided_by_k",
                                  ("balance_loss_uniform",), "HF's Mixtral loss divided by top_k"),
    "update_sign_flipped": ("bias_update", _bias_update, "sign_flipped", ("bias_update_direction",),
                            "raises the bias of overloaded experts"),
    "update_against_zero": ("bias_update", _bias_update, "against_zero", ("bias_update_direction",),
                            "compares the load with 0 instead of the mean load"),
    "rope_y_first": ("rope_2d", _rope, "y_first", ("rope_layout",), "row (y) before column (x) in each pair"),
    "rope_half_split": ("rope_2d", _rope, "half_split", ("rope_layout",),
                        "rotate_half layout (pairs j, j + d/2) instead of adjacent complex pairs"),
    "rope_freq_2i": ("rope_2d", _rope, "freq_2i", ("rope_layout",), "frequencies theta^(-2i/d) (1D RoPE's)"),
    "rope_sin_sign": ("rope_2d", _rope, "sin_sign", ("rope_norm", "rope_relative"),
                      "re' = re cos + im sin: not a rotation"),
    "pos_column_major": ("pos_emb", _pos_emb, "column_major", ("pos_emb_interpolation",),
                         "the table flattened column-major (h and w swapped)"),
    "pos_bilinear": ("pos_emb", _pos_emb, "bilinear", ("pos_emb_interpolation",), "bilinear instead of bicubic"),
    "encode_global_attention": ("moonvit_encode", _encode, "global_attention",
                                ("packing_equals_separate", "packing_isolation"),
                                "no cu_seqlens: every token attends to every packed image"),
    "encode_flat_positions": ("moonvit_encode", _encode, "flat_positions", ("packing_equals_separate",),
                              "RoPE positions from the packed index with the first image's width"),
    "merge_consecutive": ("patch_merge", _merge, "consecutive", ("merger_bijection",),
                          "groups 4 consecutive raster tokens (Qwen2-VL's merger without its processor's order)"),
    "merge_column_major": ("patch_merge", _merge, "column_major", ("merger_bijection",),
                           "column-major order inside each 2x2 window"),
    "route_unchecked": ("route", _route, "unchecked", ("kimi_vl_contract",),
                        "no argument checks: top_k beyond the kept groups picks -inf experts"),
    "moe_unchecked": ("moe", _moe, "unchecked", ("kimi_vl_contract",),
                      "no shape checks: a malformed weight fails deep inside a matmul, naming nothing"),
    "dispatch_unchecked": ("dispatch", _dispatch, "unchecked", ("kimi_vl_contract",),
                           "out-of-range expert indices clamped to the last expert instead of rejected"),
    "rope_unchecked": ("rope_2d", _rope, "unchecked", ("kimi_vl_contract",),
                       "no head-dim check: d = 6 fails inside the broadcast, naming nothing"),
    "merge_no_even_check": ("patch_merge", _merge, "no_even_check", ("kimi_vl_contract",),
                            "odd h or w silently floored instead of rejected"),
    "projector_quick_gelu": ("projector", _projector, "quick_gelu", ("projector_spec",),
                             "QuickGELU x sigma(1.702 x) (SGLang kimi_vl.py)"),
    "projector_ln_after_concat": ("projector", _projector, "ln_after_concat", ("projector_spec",),
                                  "LayerNorm over the concatenated 4D instead of per patch"),
    "projector_tanh_gelu": ("projector", _projector, "tanh", ("projector_spec",), "tanh-approximate GELU"),
}

for _name, (_op, _fn, _bug, _claims, _notes) in _BUGS.items():
    globals()[_name] = partial(_fn, bug=_bug)

_M = __name__
MUTANTS = [
    mutant(_D + op, name, f"{_M}:{name}", targets=tuple(_D + c for c in claims), notes=notes, dtypes=("float64",))
    for name, (op, _fn, _bug, claims, notes) in _BUGS.items()
]
