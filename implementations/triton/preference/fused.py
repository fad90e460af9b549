"""The fused chunked DPO and GRPO losses with their per-chunk row work in Triton kernels (rows.py)."""

from __future__ import annotations

import functools

from implementations.torch.preference import fused

from .rows import TritonRowOps

fused_linear_dpo_loss = functools.partial(fused.fused_linear_dpo_loss, row_ops=TritonRowOps)
fused_linear_grpo_loss = functools.partial(fused.fused_linear_grpo_loss, row_ops=TritonRowOps)
