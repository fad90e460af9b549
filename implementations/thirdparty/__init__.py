"""Adapters to libraries nobody here wrote: torch SDPA, torch FlexAttention, torch.softmax, scipy.special.

Their documented deviations are findings measured by the property tests (torch 2.13, CPU); each one is expected
to fail its claim, and the report shows it with the reason below.
"""

import torch

from eqspec.registry import REGISTRY, Deviation, Implementation

_M = "implementations.thirdparty"
_TOP_LEFT = Deviation("SDPA's is_causal=True aligns the causal mask top-left (query i sees keys j <= i); "
                      "FlashAttention's convention is bottom-right (j <= i + Sk - Sq); they agree only when Sq = Sk")
_NAN_ROW = "returns NaN for a row of -inf (every key masked) where the spec returns y = 0, lse = -inf"
_SDPA_HIDES_NAN = Deviation(
    "SDPA's default CPU kernel returns 0, not NaN, for a query row that holds a NaN (the math backend "
    "propagates it): a NaN input is silently hidden", only=(("device", ("cpu",)),))
_SDPA_ACCEPTS = Deviation(
    "SDPA broadcasts batch dimensions, so a 3-D q is valid input to it (CPU and CUDA); and its default CPU kernel "
    "accepted a v whose length (6) differs from k's (7) without an error (the math backend raises)",
    only=(("case", ("q of rank 3", "v length mismatch")),), strict=False)
_SDPA_CUDA_EMPTY_ROWS = Deviation(
    "SDPA's default CUDA dispatch with the bottom-right causal mask (causal_lower_right) and Sq > Sk returns values "
    "for a row that sees no key, where the spec returns o = 0: measured on an H200 (torch 2.11, float32), Sq = 2, "
    "Sk = 1, D = 8: row 0 came back as (0.392, -0.224, -0.320, -1.205, 1.044, ...), not 0 and not NaN",
    only=(("device", ("cuda",)),), strict=False)
_SDPA_BACKWARD = Deviation(
    "SDPA's default CPU kernel's float32 backward can exceed 3x the naive error (measured: dV off by 3.85e-5 where "
    "the naive code is off by 3.0e-6 and the math backend by 3.5e-6, Sq = Sk = 63, D = 59, |dV| ~ 4); the ci "
    "profile's examples do not reach such a case, the thorough profile does",
    only=(("dtype", ("float32",)), ("device", ("cpu",))), strict=False)


def _is_causal_at_scale_not_positive(same_lengths_only: bool):
    def at(arguments: dict) -> bool:
        q, k, scale = arguments["q"], arguments["k"], arguments.get("scale")
        # an omitted argument is a marker object (eqspec.domain), not None
        return (arguments.get("causal") is True and isinstance(scale, (int, float))
                and float(torch.tensor(float(scale), dtype=q.dtype)) <= 0  # as the kernel sees it, in q's dtype
                and (not same_lengths_only or q.shape[-2] == k.shape[-2]))
    return at


_SCALE_NOT_POSITIVE = (
    "SDPA's default CPU kernel with is_causal=True and a scale that is 0 or negative (or rounds to 0 in the inputs' "
    "dtype: 1e-300 in float32) returns NaN in every row that has a masked key, where the spec (and SDPA's math "
    "backend) return the softmax over the visible keys: the mask's -inf times the scale (measured, torch 2.13, "
    "float64 and float32, Sq = Sk = 4, scale 0, -0.001 and -0.5: rows 0 to 2 NaN)")
_SDPA_SCALE_NOT_POSITIVE = Deviation(_SCALE_NOT_POSITIVE + "; causal_lower_right dispatches to is_causal when Sq = Sk",
                                     only=(("device", ("cpu",)),),
                                     at=_is_causal_at_scale_not_positive(same_lengths_only=True))
_SDPA_IS_CAUSAL_SCALE_NOT_POSITIVE = Deviation(_SCALE_NOT_POSITIVE, only=(("device", ("cpu",)),),
                                               at=_is_causal_at_scale_not_positive(same_lengths_only=False))
_SDPA_DEVIATIONS = {"flash_attention.nan_propagation": _SDPA_HIDES_NAN,
                    "flash_attention.attention_contract": _SDPA_ACCEPTS,
                    "flash_attention.gradients": _SDPA_BACKWARD,
                    "flash_attention.exact_attention": _SDPA_CUDA_EMPTY_ROWS}
_BROADCASTS = Deviation("SDPA broadcasts batch dimensions, so a 3-D q is valid input to it",
                        only=(("case", ("q of rank 3",)),))
_FLEX_ACCEPTS = Deviation(
    "flex_attention accepts a v whose dtype differs from q's and k's (measured, q, k float32 with v float16, and "
    "float16 q, k with float32 v, in every input dtype): no error, o comes back in q's dtype",
    only=(("case", ("dtype mismatch",)),))
# (name, backend, devices, dtypes, capabilities): what each pinned backend has kernels for, measured on an H200
# (torch 2.11): flash and cuDNN only 16-bit inputs, the memory-efficient kernel no GQA ("No available kernel" in
# float32, float16 and bfloat16 with 16 query heads over 4); any other combination a backend refuses is reported
# unsupported by the adapter (its NotImplementedError), not wrong
_ALL_DTYPES, _HALF = None, ("float16", "bfloat16")
_GQA, _NO_GQA = frozenset({"grad", "gqa", "causal"}), frozenset({"grad", "causal"})
_PINNED_BACKENDS = (("math", "MATH", ("cpu", "cuda"), _ALL_DTYPES, _GQA),
                    ("flash", "FLASH_ATTENTION", ("cuda",), _HALF, _GQA),
                    ("efficient", "EFFICIENT_ATTENTION", ("cuda",), ("float32", *_HALF), _NO_GQA),
                    ("cudnn", "CUDNN_ATTENTION", ("cuda",), _HALF, _GQA))

for _impl in (
    Implementation("flash_attention.attention", "thirdparty.sdpa", f"{_M}.sdpa:sdpa_attention", "thirdparty",
                   provides=frozenset({"grad", "gqa", "causal"}),
                   deviations={**_SDPA_DEVIATIONS, "flash_attention.operations_match_spec": _SDPA_SCALE_NOT_POSITIVE},
                   notes="torch.nn.functional.scaled_dot_product_attention with causal_lower_right; "
                         "returns no lse, so lse claims are not checked"),
    *(Implementation("flash_attention.attention", f"thirdparty.sdpa_{name}", f"{_M}.sdpa:sdpa_{name}", "thirdparty",
                     devices=devices, dtypes=dtypes, provides=provides,
                     deviations={"flash_attention.attention_contract": _BROADCASTS},
                     notes=f"SDPA pinned to SDPBackend.{backend} (torch.nn.attention.sdpa_kernel); returns no lse")
      for name, backend, devices, dtypes, provides in _PINNED_BACKENDS),
    Implementation("flash_attention.attention", "thirdparty.sdpa_is_causal", f"{_M}.sdpa:sdpa_is_causal",
                   "thirdparty", provides=frozenset({"grad", "gqa"}),
                   deviations={**_SDPA_DEVIATIONS, "flash_attention.causal_bottom_right": _TOP_LEFT,
                               "flash_attention.operations_match_spec": _SDPA_IS_CAUSAL_SCALE_NOT_POSITIVE,
                               "flash_attention.fully_masked_rows": _TOP_LEFT},
                   notes="SDPA with is_causal=True; returns no lse"),
    *(Implementation("flash_attention.attention", f"thirdparty.flex_{name}", f"{_M}.flex:flex_{name}", "thirdparty",
                     provides=frozenset({"lse", "gqa", "causal"}),
                     deviations={"flash_attention.attention_contract": _FLEX_ACCEPTS},
                     notes=f"torch.nn.attention.flex_attention, un-compiled, causal as {how} (bottom-right), "
                           "enable_gqa=True, lse from return_aux=AuxRequest(lse=True); no CPU backward, so no grad")
      for name, how in (("score_mod", "a score_mod"), ("block_mask", "a BlockMask (create_block_mask)"))),
    Implementation("flash_attention.softmax", "thirdparty.torch_softmax", f"{_M}.softmax:torch_softmax",
                   "thirdparty", provides=frozenset({"lse"}),
                   deviations={"flash_attention.softmax_masked_row": Deviation("torch.softmax " + _NAN_ROW),
                               "flash_attention.operations_match_spec": Deviation(
                                   "torch.softmax " + _NAN_ROW + " (where the domain draws such a row)",
                                   strict=False)},
                   notes="torch.softmax and torch.logsumexp"),
    Implementation("flash_attention.softmax", "thirdparty.scipy", f"{_M}.softmax:scipy_softmax", "thirdparty",
                   devices=("cpu",), modules=("scipy",), provides=frozenset({"lse"}),
                   deviations={"flash_attention.softmax_masked_row": Deviation("scipy.special.softmax " + _NAN_ROW),
                               "flash_attention.operations_match_spec": Deviation(
                                   "scipy.special.softmax " + _NAN_ROW + " (where the domain draws such a row)",
                                   strict=False)},
                   notes="scipy.special.softmax and logsumexp (half/bfloat16 computed in float32)"),
):
    REGISTRY.add_implementation(_impl)
