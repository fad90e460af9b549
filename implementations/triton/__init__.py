"""Triton kernels: the FlashAttention forward and backward (dense and packed) and a row softmax.

Declarations only: triton is imported when a kernel is first loaded, so a machine without it sees a reason
instead of an import error. On the CPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1).
"""

from eqspec.registry import REGISTRY, Implementation

_M = "implementations.triton"
_KERNEL = dict(origin="triton", modules=("triton",), devices=("cpu", "cuda"), interpreted_on_cpu=True,
               dtypes=("float32", "float16", "bfloat16"))
_FWD = frozenset({"lse", "gqa", "causal"})

for _impl in (
    Implementation("flash_attention.attention", "triton.flash", f"{_M}.flash_attention:flash_attention",
                   provides=_FWD | {"grad"},
                   notes="FA2 forward kernel (online softmax, deferred normalisation) and backward kernels (P "
                         "recomputed from lse; dK, dV per key block over the GQA group, dQ per query block, no "
                         "atomics); fp32 accumulation for 16-bit inputs, fp64 for fp32 inputs", **_KERNEL),
    Implementation("flash_attention.attention_backward", "triton.flash",
                   f"{_M}.attention_backward:attention_backward", provides=_FWD,
                   notes="the FA2 backward kernels: D = rowsum(dO o O), then dK/dV and dQ launches", **_KERNEL),
    Implementation("flash_attention.varlen_attention", "triton.flash",
                   f"{_M}.flash_attention:flash_varlen_attention", provides=_FWD | {"grad"},
                   notes="the FA2 kernels over a table of (sequence, block) programs built from cu_seqlens, "
                         "forward and backward", **_KERNEL),
    Implementation("flash_attention.softmax", "triton.softmax", f"{_M}.softmax:softmax", provides=frozenset({"lse"}),
                   notes="row softmax, several rows per program; one tile per row or two passes with an "
                         "online max and sum for long rows; fp64 arithmetic for fp32 inputs", **_KERNEL),
):
    REGISTRY.add_implementation(_impl)
