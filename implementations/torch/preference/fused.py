"""Fused, chunked "last linear layer + log-softmax + loss" for DPO and GRPO (the Liger-Kernel approach).

The (batch x tokens x vocab) logits are never materialised, forward or backward. The scored positions (completion
tokens only: masked positions are never computed) are processed in chunks of ``chunk_size`` tokens:

  pass 1   for each chunk: z = h W^T / T, its log-sum-exp, and the target's log-probability (no graph kept);
  loss     the loss from the per-token log-probs (the eager code in eager.py, so no formula is written twice) and
           its gradient g = d loss / d log pi per token, by autograd on a vector of n scalars;
  pass 2   for each chunk: recompute z, p = exp(z - lse), dz = g (onehot - p) / T, then dh = dz W and dW += dz^T h.

Both passes run inside the forward of a torch.autograd.Function (as Liger-Kernel computes the gradients in the
forward); the backward only scales the saved dh and dW by the incoming gradient. Memory beyond the inputs and their
gradients: O(chunk_size x V). Accumulation is float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch

from eqspec.contracts import ArgumentError
from specs import dpo as dpo_spec
from specs import grpo as grpo_spec

from . import eager

ELEMENTS_PER_CHUNK = 2**22  # chunk_size x V logits per chunk by default: 16 MiB in float32


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def default_chunk_size(vocab: int) -> int:
    return max(1, ELEMENTS_PER_CHUNK // vocab)


def _check_chunk(chunk_size, vocab: int) -> int:
    if chunk_size is None:
        return default_chunk_size(vocab)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ArgumentError("chunk_size", f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return chunk_size


class TorchRowOps:
    """The two per-chunk row operations on a block of logits z (rows x V), in torch ops. A Triton version
    (implementations/triton/preference) does each in one pass over the block."""

    @staticmethod
    def lse_and_target(z, targets):
        """(logsumexp of each row, z at each row's target)."""
        return torch.logsumexp(z, dim=-1), z.gather(-1, targets[:, None]).squeeze(-1)

    @staticmethod
    def logits_gradient(z, lse, targets, g, temperature):
        """d loss / d (h W^T) = g (onehot - p) / T, with p = exp(z - lse); may overwrite z."""
        dz = torch.exp(z - lse[:, None])  # p
        dz.mul_(-g[:, None])
        dz.scatter_add_(-1, targets[:, None], g[:, None])
        if temperature != 1.0:
            dz.div_(temperature)
        return dz


class FusedLinearLogpLoss(torch.autograd.Function):
    """loss_of_logps(log pi at the scored positions) with log pi = log softmax(h W^T / T)[target], chunked."""

    @staticmethod
    def forward(ctx, hidden, weight, rows, targets, temperature, chunk_size, loss_of_logps, row_ops=TorchRowOps):
        acc = _acc(hidden.dtype)
        h = hidden.reshape(-1, hidden.shape[-1])
        W = weight.to(acc)
        n = rows.numel()
        logps = torch.empty(n, dtype=acc, device=hidden.device)
        lse = torch.empty(n, dtype=acc, device=hidden.device)
        chunks = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]

        def logits(s, e):
            z = h[rows[s:e]].to(acc) @ W.T
            return z / temperature if temperature != 1.0 else z

        for s, e in chunks:
            z = logits(s, e)
            lse[s:e], z_target = row_ops.lse_and_target(z, targets[s:e])
            logps[s:e] = z_target - lse[s:e]
            del z
        wants_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        with torch.enable_grad():
            lp = logps.detach().requires_grad_(wants_grad)
            loss = loss_of_logps(lp)
        if not wants_grad:
            ctx.save_for_backward(None, None)
            return loss.detach().to(hidden.dtype)
        (g,) = torch.autograd.grad(loss, lp)
        dh = torch.zeros(h.shape, dtype=acc, device=hidden.device)
        dW = torch.zeros_like(W)
        for s, e in chunks:
            z = logits(s, e)
            dz = row_ops.logits_gradient(z, lse[s:e], targets[s:e], g[s:e], temperature)
            hc = h[rows[s:e]].to(acc)
            dh[rows[s:e]] = dz @ W
            dW.addmm_(dz.T, hc)
            del z, dz
        ctx.save_for_backward(dh.view(hidden.shape).to(hidden.dtype), dW.to(weight.dtype))
        return loss.detach().to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        dh, dW = ctx.saved_tensors
        if bool(grad_output == 1):  # the usual case (loss.backward()): no second copy of dW, which is V x H
            return dh, dW, None, None, None, None, None, None
        return (None if dh is None else dh * grad_output, None if dW is None else dW * grad_output,
                None, None, None, None, None, None)


def fused_linear_dpo_loss(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, *,
                          beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
                          chunk_size: int | None = None, row_ops=TorchRowOps):
    dpo_spec.check_fused_args(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps)
    dpo_spec.check_loss_options(beta, loss_type, label_smoothing)
    chunk = _check_chunk(chunk_size, weight.shape[0])
    N, T, _ = hidden.shape
    acc = _acc(hidden.dtype)
    # position t-1 of sequence i scores token t: flat row i*T + t-1, for the completion tokens t >= 1
    scored = completion_mask[:, 1:] != 0
    seq, t = scored.nonzero(as_tuple=True)
    rows = seq * T + t
    targets = input_ids[seq, t + 1].long()
    counts = scored.to(acc).sum(-1)

    def loss_of_logps(lp):
        logps = torch.zeros(N, dtype=acc, device=lp.device).index_add(0, seq, lp)
        return eager.dpo_batch_loss(logps, counts, ref_chosen_logps.to(acc), ref_rejected_logps.to(acc), beta=beta,
                                    loss_type=loss_type, label_smoothing=label_smoothing)

    return FusedLinearLogpLoss.apply(hidden, weight, rows, targets, 1.0, chunk, loss_of_logps, row_ops)


def fused_linear_grpo_loss(hidden, weight, completion_ids, completion_mask, advantages, old_logps=None,
                           ref_logps=None, *, temperature: float = 1.0, beta: float = 0.04, epsilon_low: float = 0.2,
                           epsilon_high: float | None = None, loss_type: str = "grpo",
                           max_completion_length: int | None = None, chunk_size: int | None = None,
                           row_ops=TorchRowOps):
    grpo_spec.check_fused_args(hidden, weight, completion_ids, completion_mask, advantages, old_logps, ref_logps,
                               beta)
    temperature = grpo_spec.check_temperature(temperature)
    grpo_spec.check_loss_options(beta, epsilon_low, epsilon_high, loss_type, max_completion_length, hidden.shape[1])
    chunk = _check_chunk(chunk_size, weight.shape[0])
    N, T, _ = hidden.shape
    acc = _acc(hidden.dtype)
    scored = completion_mask != 0
    seq, t = scored.nonzero(as_tuple=True)
    rows = seq * T + t
    targets = completion_ids[seq, t].long()
    on_policy = old_logps is None

    def loss_of_logps(lp):
        logps = torch.zeros(N, T, dtype=acc, device=lp.device).index_put((seq, t), lp)
        old = logps.detach() if on_policy else old_logps.to(acc)
        ref = None if ref_logps is None else ref_logps.to(acc)
        return eager.grpo_loss(logps, old, ref, advantages.to(acc), completion_mask, beta=beta,
                               epsilon_low=epsilon_low, epsilon_high=epsilon_high, loss_type=loss_type,
                               max_completion_length=max_completion_length)

    return FusedLinearLogpLoss.apply(hidden, weight, rows, targets, temperature, chunk, loss_of_logps, row_ops)
