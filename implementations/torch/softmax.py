"""Row softmax with its log-sum-exp in plain torch, in the input's dtype: the naive same-precision baseline."""

from __future__ import annotations

import torch

from specs.validators import check_tensor


def naive_softmax(x: torch.Tensor):
    check_tensor("x", x)
    m = x.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    e = torch.exp(x - m)
    ell = e.sum(dim=-1, keepdim=True)
    y = torch.where(ell == 0, torch.zeros_like(e), e / ell)
    lse = (m + torch.log(ell)).squeeze(-1)
    return y, lse.to(torch.promote_types(lse.dtype, torch.float32))
