"""SigLIP's sigmoid loss chunked over image rows, forward and backward: memory O(chunk x n), never O(n^2).

The loss is a sum of independent per-pair terms (SigLIP §3.1), so it can be accumulated over blocks of
``chunk_size`` image rows against all n texts. The backward recomputes each block's logits from the saved
normalised features instead of keeping them (a ``torch.autograd.Function``), with

    G = dl/dL = -z sigma(-z L) / n = (sigma(L) - [i = j]) / n,
    dx^_c = t G y^,   dy^ += t G^T x^_c,   dt = sum_i x^_i . (G y^)_i,   db = sum G,

so the gradients are chunked too. Normalisation and t = exp(t') stay outside, in autograd (O(n D)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specs.siglip import check_chunk_size
from specs.validators import check_pair

from .eager import _scalar

# The scalars summed over chunks (the loss, dt, db) accumulate in float64: each chunk's partial sum (torch's pairwise
# sum, in the block's dtype) is one rounding, and adding 64 of them in float32 cost 15x the naive loss's error at
# n = 16384 (measured: 1.8e-6 against 1.2e-7).
ACC = torch.float64


class ChunkedSigmoidLoss(torch.autograd.Function):
    """One (chunk, n) block of logits at a time, worked on in place in buffers allocated once: the forward holds
    two blocks, the backward one (a fresh block per chunk made the peak RSS wander by ~100 MB from run to run).
    With M = -z o L (L with its positives negated), -log sigma(z L) = softplus(M) and G = -z o sigma(M) / n."""

    @staticmethod
    def forward(ctx, x_hat, y_hat, t, b, chunk_size: int):
        n = x_hat.shape[0]
        acc = ACC
        total = torch.zeros((), dtype=acc, device=x_hat.device)
        blocks = torch.empty(2, min(chunk_size, n), n, dtype=x_hat.dtype, device=x_hat.device)  # reused: no churn
        for i0 in range(0, n, chunk_size):
            x_c = x_hat[i0:i0 + chunk_size]
            M, A = blocks[0, :x_c.shape[0]], blocks[1, :x_c.shape[0]]
            _negated_logits(x_c, y_hat, t, b, i0, out=M)
            # softplus(M) = max(M, 0) + log(1 + exp(-|M|)), exact for every M (F.softplus linearises above 20)
            torch.abs(M, out=A)
            total += A.neg_().exp_().log1p_().sum().to(acc)
            total += M.clamp_(min=0).sum().to(acc)
        ctx.save_for_backward(x_hat, y_hat, t, b)
        ctx.chunk_size = chunk_size
        return (total / n).to(x_hat.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        x_hat, y_hat, t, b = ctx.saved_tensors
        n, c = x_hat.shape[0], ctx.chunk_size
        acc = ACC
        dx, dy = torch.empty_like(x_hat), torch.zeros_like(y_hat)
        dt = torch.zeros((), dtype=acc, device=x_hat.device)
        db = torch.zeros((), dtype=acc, device=x_hat.device)
        scale, t_value = grad_loss / n, float(t)
        block = torch.empty(min(c, n), n, dtype=x_hat.dtype, device=x_hat.device)
        for i0 in range(0, n, c):
            x_c = x_hat[i0:i0 + c]
            G = _negated_logits(x_c, y_hat, t, b, i0, out=block[:x_c.shape[0]]).sigmoid_()  # sigma(-z L)
            G.diagonal(offset=i0).neg_()  # -z sigma(-z L) = sigma(L) - [i = j], without cancellation in sigma(L) - 1
            G.mul_(scale)
            Gy = G @ y_hat
            dx[i0:i0 + c] = t * Gy
            dt += (x_c * Gy).sum().to(acc)  # sum_ij G_ij x_i . y_j without the block of dot products
            db += G.sum().to(acc)
            dy.addmm_(G.T, x_c, alpha=t_value)
        return dx, dy, dt.to(t.dtype), db.to(b.dtype), None


def _negated_logits(x_c, y_hat, t, b, i0: int, *, out: torch.Tensor) -> torch.Tensor:
    """M = -z o L for the rows i0 .. i0 + len(x_c) - 1, written into out: the logits, their positives (column
    i0 + i) negated."""
    M = torch.mm(x_c, y_hat.T, out=out)
    M.mul_(t).add_(b)
    M.diagonal(offset=i0).neg_()
    return M


def chunked_sigmoid_loss(image_features, text_features, t_prime, bias, *, chunk_size: int):
    check_pair(image_features, text_features)
    c = check_chunk_size(chunk_size)
    t = _scalar("t_prime", t_prime, image_features).exp()
    b = _scalar("bias", bias, image_features)
    x_hat, y_hat = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
    return ChunkedSigmoidLoss.apply(x_hat, y_hat, t, b, c)
