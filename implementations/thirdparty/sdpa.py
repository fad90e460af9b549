"""torch.nn.functional.scaled_dot_product_attention as an implementation of flash_attention.attention.

SDPA returns no log-sum-exp, so only o can be checked (lse is None). It takes no stance on our input contract:
the adapters pass arguments straight through, so malformed input is judged by what SDPA itself does.
``sdpa_attention`` asks for the bottom-right causal mask explicitly (torch.nn.attention.bias.causal_lower_right,
FlashAttention's convention) and lets torch pick its backend; ``sdpa_math`` and friends pin one backend
(torch.nn.attention.sdpa_kernel), so their differences show side by side; ``sdpa_is_causal`` uses
``is_causal=True``, which torch documents as top-left aligned (row i sees keys j <= i): the two conventions
agree only when Sq == Sk.
"""

from __future__ import annotations

import contextlib
import warnings
from functools import partial

import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right


def sdpa_attention(q, k, v, *, causal: bool = False, scale=None, backend: SDPBackend | None = None):
    mask = None
    if causal:
        with warnings.catch_warnings():  # "will produce NaNs when seq_len_q > seq_len_kv": we check that claim
            warnings.simplefilter("ignore", UserWarning)
            mask = causal_lower_right(q.shape[-2], k.shape[-2])
    with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
        try:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                               enable_gqa=q.shape[1] != k.shape[1])
        except RuntimeError as error:  # a pinned backend's own word that it does not support these inputs
            if "No available kernel" not in str(error):
                raise
            raise NotImplementedError(
                f"SDPA's {backend.name} backend has no kernel for {str(q.dtype)[6:]} on {q.device.type} with "
                f"head dim {q.shape[-1]}/{v.shape[-1]}, {q.shape[1]}/{k.shape[1]} heads, "
                f"{'a causal mask' if causal else 'no mask'}") from error
    return o, None


sdpa_math = partial(sdpa_attention, backend=SDPBackend.MATH)
sdpa_flash = partial(sdpa_attention, backend=SDPBackend.FLASH_ATTENTION)
sdpa_efficient = partial(sdpa_attention, backend=SDPBackend.EFFICIENT_ATTENTION)
sdpa_cudnn = partial(sdpa_attention, backend=SDPBackend.CUDNN_ATTENTION)


def sdpa_is_causal(q, k, v, *, causal: bool = False, scale=None):
    o = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    return o, None
