"""The Triton kernels' autotuned launch path (GPU, 16-bit, dense) is the one path the CPU suite cannot reach: the
interpreter has no GPU to time configs on. With a single config the autotuner launches without timing, so each
autotuned launcher is run here under the interpreter, on float16 (the interpreter's bfloat16 dot is wrong), and
must give what the fixed-config launch gives."""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" or torch.cuda.is_available(),
                                reason="checks the autotuned launch under the CPU interpreter only")


@pytest.mark.parametrize("causal", [False, True])
def test_autotuned_launches_match_the_fixed_ones(monkeypatch, causal):
    triton = pytest.importorskip("triton")
    from implementations.triton import attention as fwd
    from implementations.triton import attention_backward as bwd

    one = [triton.Config({"BLOCK_Q": 32, "BLOCK_K": 16}, num_warps=4, num_stages=1)]
    monkeypatch.setattr(fwd, "_attn_fwd_tuned", triton.autotune(configs=one, key=["D"])(fwd._attn_fwd_kernel))
    monkeypatch.setattr(bwd, "_bwd_dkdv_tuned", triton.autotune(configs=one, key=["D"])(bwd._bwd_dkdv))
    monkeypatch.setattr(bwd, "_bwd_dq_tuned", triton.autotune(configs=one, key=["D"])(bwd._bwd_dq))
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 45, 24, generator=generator).half()
    k, v = (torch.randn(1, 2, 37, 24, generator=generator).half() for _ in range(2))
    do = torch.randn(1, 4, 45, 24, generator=generator).half()

    fixed_o, fixed_lse = fwd.attention(q, k, v, causal=causal, block_q=32, block_k=16)
    fixed_grads = bwd.attention_backward(q, k, v, fixed_o, fixed_lse, do, causal=causal, block_q=32, block_k=16)
    # Force the autotuned path as on a GPU (it is chosen only where the interpreter is off).
    monkeypatch.setattr(fwd, "tuned", lambda *args: True)
    monkeypatch.setattr(bwd, "tuned", lambda *args: True)
    monkeypatch.setattr(fwd, "_interpreting", lambda: False)
    monkeypatch.setattr(bwd, "_interpreting", lambda: False)
    monkeypatch.setattr(fwd, "_check_runnable", lambda *args: None)
    monkeypatch.setattr(bwd, "_check_runnable", lambda *args: None)
    o, lse = fwd.attention(q, k, v, causal=causal)
    grads = bwd.attention_backward(q, k, v, o, lse, do, causal=causal)
    # Same tiles, same order of operations; the products differ only in how the interpreter multiplies float16
    # operands on the tensor-core path ("tc") and the upcast path, by a few float16 roundings. A wrong grid,
    # argument order or mask would be off by the size of the values themselves.
    for name, got, want in zip(("o", "lse", "dq", "dk", "dv"), (o, lse, *grads), (fixed_o, fixed_lse, *fixed_grads)):
        assert torch.equal(torch.isinf(got), torch.isinf(want)), f"{name}: -inf (fully masked rows) differ"
        got, want = (torch.where(torch.isinf(x), 0.0, x.float()) for x in (got, want))
        scale = float(want.abs().max())
        err = float((got - want).abs().max())
        assert err <= 4 * 2**-10 * scale, f"{name}: autotuned launch off by {err:.3g} (values up to {scale:.3g})"
