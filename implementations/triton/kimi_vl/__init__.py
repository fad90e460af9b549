"""Triton kernels of the Kimi-VL document: the MoE permute (dispatch) and unpermute (combine), and the grouped MoE
layer that uses them. Declarations only; on the CPU they run under Triton's interpreter (small sizes)."""

from eqspec.registry import REGISTRY, Implementation

_M = "implementations.triton.kimi_vl.permute"
_KERNEL = dict(origin="triton", modules=("triton",), devices=("cpu", "cuda"), interpreted_on_cpu=True,
               dtypes=("float64", "float32", "bfloat16"))

for _impl in (
    Implementation("kimi_vl.dispatch", "triton.permute", f"{_M}:dispatch",
                   notes="stable argsort on the host, row copy kernel (ROWS rows per program)", **_KERNEL),
    Implementation("kimi_vl.combine", "triton.unpermute", f"{_M}:combine",
                   notes="one program per ROWS tokens gathers its K rows; float32 accumulation (float64 for "
                         "float64), no atomics", **_KERNEL),
    Implementation("kimi_vl.moe", "triton.grouped", f"{_M}:moe_grouped",
                   provides=frozenset({"sigmoid", "softmax", "bias", "groups", "scaling", "shared"}),
                   notes="torch router and expert matmuls, Triton permute / unpermute; forward only", **_KERNEL),
):
    REGISTRY.add_implementation(_impl)
