"""The MoE layer in torch, two ways: a per-token loop (the equation's shape) and a sort/permute grouped layer.

Both route with the float32 router (routing.route). The loop computes each token's K experts one by one in the
input dtype and is the naive same-precision baseline. The grouped layer sorts the T x K (token, expert) slots by
expert (a stable argsort: the dispatch of specs.moe_routing), runs each expert once on its contiguous buffer, and
scatters the weighted outputs back with index_add in float32 (the combine), the way MegaBlocks-style kernels do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specs.moe_routing import check_combine_args, check_indices, check_moe_args
from specs.validators import check_tensor

from .routing import route, router_logits


def swiglu(x, w_gate, w_up, w_down):
    return F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


def _swiglu_hidden(x, w_gate, w_up, in_place: bool):
    g, u = F.linear(x, w_gate), F.linear(x, w_up)
    return F.silu(g, inplace=True).mul_(u) if in_place else F.silu(g) * u


def _shared(x, shared):
    if shared is None:
        return 0
    return F.linear(_swiglu_hidden(x, shared[0], shared[1], not torch.is_grad_enabled()), shared[2])


def moe_loop(x, w_router, bias, w_gate, w_up, w_down, config, shared=None):
    config = check_moe_args(x, w_router, bias, w_gate, w_up, w_down, config, shared)
    indices, weights = route(router_logits(x, w_router), bias, config)
    rows = []
    for t in range(x.shape[0]):
        y_t = torch.zeros_like(x[t])
        for j in range(config.top_k):
            i = int(indices[t, j])
            y_t = y_t + weights[t, j].to(x.dtype) * swiglu(x[t], w_gate[i], w_up[i], w_down[i])
        rows.append(y_t)
    return torch.stack(rows) + _shared(x, shared)


# --- the grouped (sort / permute) layer ---------------------------------------------------------------

def sort_slots(indices: torch.Tensor, n_experts: int):
    """(order, counts): the slots t*K + j sorted by expert, stably (token order inside each expert)."""
    flat = indices.reshape(-1)
    return torch.argsort(flat, stable=True), torch.bincount(flat, minlength=n_experts)


def dispatch(x, indices, n_experts):
    """kimi_vl.dispatch by a stable argsort: x_sorted = x[order // K], positions = the inverse permutation."""
    check_tensor("x", x, rank=2)
    check_indices(indices, n_experts, x.shape[0])
    order, counts = sort_slots(indices, n_experts)
    positions = torch.empty_like(order)
    positions[order] = torch.arange(order.numel(), device=order.device)
    return x[order // indices.shape[1]], counts, positions.view(indices.shape)


def combine(y_sorted, positions, weights):
    """The naive baseline of kimi_vl.combine: gather the K rows of each token and sum them in y's dtype."""
    check_combine_args(y_sorted, positions, weights)
    return (weights.to(y_sorted.dtype)[:, :, None] * y_sorted[positions]).sum(1)


def run_experts(x_sorted, counts, w_gate, w_up, w_down, row_scale=None):
    """Each expert on its contiguous buffer (experts with no token are skipped). ``row_scale`` (one gate weight per
    row) multiplies the F-wide hidden activations before the down projection, W_d (w h) = w (W_d h): fewer
    multiplies than scaling the D-wide outputs.

    For autograd the buffers are cut with split and the experts' weights taken apart with unbind, whose backwards
    are one cat and one stack: indexing w_gate[e] or slicing x_sorted in the loop would give every expert a
    full-size zero gradient to accumulate into (64 experts x 3 weights x E F D floats per backward). Without
    autograd the activations are updated in place and the outputs written straight into one buffer.
    """
    sizes = counts.tolist()
    in_place = not torch.is_grad_enabled()
    chunks = x_sorted.split(sizes)
    scales = row_scale.split(sizes) if row_scale is not None else [None] * len(sizes)
    gates, ups, downs = w_gate.unbind(0), w_up.unbind(0), w_down.unbind(0)
    out = torch.empty(x_sorted.shape[0], w_down.shape[1], dtype=x_sorted.dtype, device=x_sorted.device)
    outputs, start = [], 0
    for e, (rows, scale) in enumerate(zip(chunks, scales)):
        n = rows.shape[0]
        if not n:
            continue
        h = _swiglu_hidden(rows, gates[e], ups[e], in_place)
        if scale is not None:
            h = h.mul_(scale[:, None].to(h.dtype)) if in_place else h * scale[:, None].to(h.dtype)
        if in_place:
            torch.mm(h, downs[e].T, out=out[start:start + n])
        else:
            outputs.append(F.linear(h, downs[e]))
        start += n
    return out if in_place else torch.cat(outputs)


def moe_grouped(x, w_router, bias, w_gate, w_up, w_down, config, shared=None):
    config = check_moe_args(x, w_router, bias, w_gate, w_up, w_down, config, shared)
    indices, weights = route(router_logits(x, w_router), bias, config)
    order, counts = sort_slots(indices, w_gate.shape[0])
    token = order // config.top_k
    y_sorted = run_experts(x[token], counts, w_gate, w_up, w_down, row_scale=weights.reshape(-1)[order])
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = torch.zeros(x.shape, dtype=acc, device=x.device).index_add(0, token, y_sorted.to(acc))
    return (y + _shared(x, shared)).to(x.dtype) if shared is not None else y.to(x.dtype)
