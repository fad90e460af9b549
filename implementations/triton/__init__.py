"""Triton kernels: the FlashAttention forward (dense and packed) and a row softmax.

Declarations only: triton is imported when a kernel is first loaded, so a machine without it sees a reason
instead of an import error. On the CPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1).
"""

from specs.registry import REGISTRY, Implementation

_M = "implementations.triton"
_KERNEL = dict(origin="triton", requires=("triton",), devices=("cpu", "cuda"), interpreted_on_cpu=True,
               dtypes=("float32", "float16", "bfloat16"))
_FWD = frozenset({"lse", "gqa", "causal"})

for _impl in (
    Implementation("flash_attention.attention", "triton.flash_fwd", f"{_M}.attention:attention", provides=_FWD,
                   notes="FA2 forward kernel (online softmax, deferred normalisation); fp32 accumulation for "
                         "16-bit inputs, fp64 for fp32 inputs; forward only", **_KERNEL),
    Implementation("flash_attention.varlen_attention", "triton.flash_fwd", f"{_M}.attention:varlen_attention",
                   provides=_FWD, notes="the FA2 forward kernel over a table of (sequence, query block) "
                                        "programs built from cu_seqlens; forward only", **_KERNEL),
    Implementation("flash_attention.softmax", "triton.softmax", f"{_M}.softmax:softmax", provides=frozenset({"lse"}),
                   notes="row softmax, several rows per program; one tile per row or two passes with an "
                         "online max and sum for long rows; fp64 arithmetic for fp32 inputs", **_KERNEL),
):
    REGISTRY.add_implementation(_impl)
