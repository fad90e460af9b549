"""Library softmax functions as implementations of flash_attention.softmax.

torch.softmax / torch.logsumexp return x's dtype; the adapter widens lse to float32 as the operation asks.
scipy.special works on NumPy arrays, which have no bfloat16: the adapter computes half and bfloat16 inputs in
float32 and rounds the result back (so it is checked as a float32 algorithm fed rounded inputs).
"""

from __future__ import annotations

import numpy as np
import torch


def torch_softmax(x: torch.Tensor):
    lse = torch.logsumexp(x, dim=-1)
    return torch.softmax(x, dim=-1), lse.to(torch.promote_types(lse.dtype, torch.float32))


def scipy_softmax(x: torch.Tensor):
    from scipy import special

    work = x.detach().cpu()
    if work.dtype in (torch.float16, torch.bfloat16):
        work = work.float()
    arr = work.numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        y = special.softmax(arr, axis=-1)
        lse = special.logsumexp(arr, axis=-1)
    y_t = torch.from_numpy(np.ascontiguousarray(y)).to(x.dtype)
    lse_t = torch.from_numpy(np.asarray(lse, dtype=arr.dtype).copy())
    return y_t, lse_t.to(torch.promote_types(lse_t.dtype, torch.float32))
