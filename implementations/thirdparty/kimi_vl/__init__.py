"""transformers as implementations of the Kimi-VL document: DeepSeek-V3's router and MoE layer, Mixtral's, the HF
balance loss, and Qwen2-VL's vision rotary embedding and PatchMerger (comparisons with documented layouts).

Their deviations from the spec are findings measured by the property tests (transformers 5.24, CPU)."""

from eqspec.registry import REGISTRY, Deviation, Implementation

_M = "implementations.thirdparty.kimi_vl"
_TF = dict(origin="thirdparty", modules=("transformers",), devices=("cpu", "cuda"), dtypes=("float32",))

_QWEN_ROPE_LAYOUT = Deviation(
    "Qwen2-VL rotates the pairs (j, j + d/2) (rotate_half) with angles [h w_j | w w_j] in each half, height first; "
    "MoonViT rotates adjacent pairs, width first. Measured at d = 8, token (row 1, column 2): the adjacent pairs of "
    "the probe (1, 0, 1, 0, ...) come back at angles [3.1416, 3.1416, 0, 0] instead of [2, 1, 0.02, 0.01]. The "
    "layout-free claims (norm, relative positions) hold")
_QWEN_RASTER = Deviation(
    "Qwen2-VL's PatchMerger views 4 consecutive tokens as one (its processor emits 2x2 windows); fed MoonViT's "
    "raster tokens it merges [0, 1, 2, 3] instead of the window [0, 1, 4, 5]. Measured on a 2 x 4 grid, D = 4: "
    "max |out - spec| = 2.39 with max |spec| = 4.23; after reordering into windows the same module is off by 5e-7")
# The differential test (test_matches_spec.py) over the whole domain, the same layouts measured (float32):
_QWEN_ROPE_DIFFERENTIAL = Deviation(
    _QWEN_ROPE_LAYOUT.reason + ". Measured on random x (grids 4 x 6 and 2 x 2, 2 heads): max |out - spec| = 6.28 "
    "at d = 8 with max |spec| = 3.13 (4.61 at d = 16, theta = 100; 6.96 at d = 64, theta = 2); with x's coordinates "
    "permuted into its layout and back the same call is off by 2.3e-7 to 8.3e-7, so theta and the frequencies "
    "agree. Only tokens at position (0, 0) pass", strict=False)
_QWEN_RASTER_DIFFERENTIAL = Deviation(
    _QWEN_RASTER.reason + ". On the whole domain: 6 of 7 merged tokens 0.46 off (D = 2, D_text = 1); images of "
    "width 2, whose raster order is the window order, pass", strict=False)
_DEEPSEEK_CONTRACT = Deviation(
    "DeepseekV3TopkRouter validates nothing. top_k = 5 with 2 kept groups of 2 experts: it returns 5 experts, the "
    "fifth from a dropped (-inf) group with weight 0.12-0.16 (measured, 3 tokens). n_group = 3 with E = 8: "
    "view(-1, 3, 2) regroups the 3 x 8 scores across token boundaries and returns a routing without an error",
    only=(("case", ("top_k beyond the kept groups", "n_group not dividing E")),))

for _impl in (
    Implementation("kimi_vl.route", "thirdparty.deepseek_v3_router", f"{_M}.transformers_moe:deepseek_v3_route",
                   provides=frozenset({"sigmoid", "bias", "groups", "scaling"}),
                   deviations={"kimi_vl.kimi_vl_contract": _DEEPSEEK_CONTRACT},
                   notes="DeepseekV3TopkRouter (hidden = E, identity router weight); sigmoid only", **_TF),
    Implementation("kimi_vl.route", "thirdparty.mixtral_router", f"{_M}.transformers_moe:mixtral_route",
                   provides=frozenset({"softmax"}),
                   notes="MixtralTopKRouter: softmax, top-k, renormalised; no bias, groups or scaling", **_TF),
    Implementation("kimi_vl.moe", "thirdparty.deepseek_v3", f"{_M}.transformers_moe:deepseek_v3_moe",
                   provides=frozenset({"sigmoid", "bias", "groups", "scaling", "shared"}),
                   notes="DeepseekV3MoE with our weights copied in (eager experts); no gradient to our tensors",
                   **_TF),
    Implementation("kimi_vl.moe", "thirdparty.mixtral", f"{_M}.transformers_moe:mixtral_moe",
                   provides=frozenset({"softmax"}),
                   notes="MixtralSparseMoeBlock (eval): softmax top-k renormalised, no shared experts", **_TF),
    Implementation("kimi_vl.balance_loss", "thirdparty.hf_load_balancing",
                   f"{_M}.transformers_moe:mixtral_balance_loss",
                   provides=frozenset({"mixtral"}),
                   notes="load_balancing_loss_func on log(scores): softmax scores, indices its own top-k", **_TF),
    Implementation("kimi_vl.rope_2d", "thirdparty.qwen2_vl_rope", f"{_M}.qwen2_vl:qwen2_vl_rope",
                   deviations={"kimi_vl.rope_layout": _QWEN_ROPE_LAYOUT,
                               "kimi_vl.operations_match_spec": _QWEN_ROPE_DIFFERENTIAL},
                   notes="Qwen2VLVisionRotaryEmbedding + apply_rotary_pos_emb_vision (rotate_half, h first)", **_TF),
    Implementation("kimi_vl.projector", "thirdparty.qwen2_vl_merger_windowed",
                   f"{_M}.qwen2_vl:qwen2_vl_projector_windowed",
                   notes="Qwen2-VL PatchMerger after reordering raster tokens into its processor's 2x2-window "
                         "order; LayerNorm eps set to Kimi-VL's", **_TF),
    Implementation("kimi_vl.projector", "thirdparty.qwen2_vl_merger", f"{_M}.qwen2_vl:qwen2_vl_projector",
                   deviations={"kimi_vl.projector_spec": _QWEN_RASTER,
                               "kimi_vl.operations_match_spec": _QWEN_RASTER_DIFFERENTIAL},
                   notes="Qwen2-VL PatchMerger fed MoonViT's raster-order tokens as they are", **_TF),
):
    REGISTRY.add_implementation(_impl)
