"""torch FlexAttention (torch.nn.attention.flex_attention, torch 2.13) as an implementation of
flash_attention.attention.

Called un-compiled: on the CPU that is torch's unfused eager path (it materialises the scores), which is what these
adapters check; the CPU has no FlexAttention backward ("FlexAttention does not support backward on CPU"), so "grad"
is not declared. The log-sum-exp comes from ``return_aux=AuxRequest(lse=True)`` (``return_lse`` is deprecated):
natural log of the scaled scores, float32 for half/bfloat16 inputs, the input dtype for float32/float64.
GQA is FlexAttention's own ``enable_gqa=True``.

Two ways to say "causal", both bottom-right aligned (query i sees key j iff j <= i + Sk - Sq, FlashAttention's
convention):

* ``flex_score_mod``: a score_mod that sets the masked scores to -inf;
* ``flex_block_mask``: a BlockMask built by create_block_mask from a mask_mod (blocks wholly masked are skipped).

``top_left_causal`` is a deliberately wrong variant (not registered): its mask_mod is top-left aligned
(j <= i, SDPA's ``is_causal``), which agrees with the spec only when Sq == Sk.
"""

from __future__ import annotations

import warnings

import torch
from torch.nn.attention.flex_attention import AuxRequest, create_block_mask, flex_attention


def _flex(q, k, v, *, scale, score_mod=None, block_mask=None):
    with warnings.catch_warnings():  # "flex_attention called without torch.compile()": un-compiled on purpose
        warnings.simplefilter("ignore", UserWarning)
        o, aux = flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale,
                                enable_gqa=q.shape[1] != k.shape[1], return_aux=AuxRequest(lse=True))
    return o, aux.lse


def _offset(q, k) -> int:
    return k.shape[-2] - q.shape[-2]


def flex_score_mod(q, k, v, *, causal: bool = False, scale=None):
    score_mod = None
    if causal:
        offset = _offset(q, k)

        def score_mod(score, b, h, q_idx, kv_idx):
            return torch.where(kv_idx <= q_idx + offset, score, -float("inf"))

    return _flex(q, k, v, scale=scale, score_mod=score_mod)


def _block_mask(q, k, mask_mod):
    return create_block_mask(mask_mod, None, None, q.shape[-2], k.shape[-2], device=q.device)


def flex_block_mask(q, k, v, *, causal: bool = False, scale=None):
    block_mask = None
    if causal:
        offset = _offset(q, k)

        def mask_mod(b, h, q_idx, kv_idx):
            return kv_idx <= q_idx + offset

        block_mask = _block_mask(q, k, mask_mod)
    return _flex(q, k, v, scale=scale, block_mask=block_mask)


def top_left_causal(q, k, v, *, causal: bool = False, scale=None):
    """WRONG on purpose (not registered): causal aligned top-left (j <= i), as SDPA's is_causal."""
    block_mask = None
    if causal:
        def mask_mod(b, h, q_idx, kv_idx):
            return kv_idx <= q_idx

        block_mask = _block_mask(q, k, mask_mod)
    return _flex(q, k, v, scale=scale, block_mask=block_mask)


top_left_causal.eqspec_provides = {"lse", "causal", "gqa"}
