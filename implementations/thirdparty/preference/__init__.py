"""trl's DPO and GRPO losses and Liger-Kernel's chunked ones as implementations of the preference operations (trl
1.16 and Liger-Kernel 0.8.5, CPU, offline).

Their documented deviations are findings measured by the property tests (trl 1.16.0, torch 2.13, CPU); each is
expected to fail its claim, and the report shows it with the reason below. trl's fused LM head computes the logits
and their log-softmax in float32 tiles whatever the input dtype, so float64 inputs are declared apart
("...float64" implementations) with that deviation.
"""

from eqspec.registry import REGISTRY, Deviation, Implementation

_M = "implementations.thirdparty.preference.trl_losses"
_NEEDS = ("trl", "transformers", "datasets")
_GRAD = frozenset({"grad"})
_F32 = ("float32",)

_NO_CDPO = Deviation(
    "trl 1.16 has no conservative DPO: since e3b7897c8 its sigmoid loss ignores label_smoothing, so cDPO (eps = 0.1) "
    "is plain DPO (measured, beta = 0.1: 0.649092 on a 2-pair case where cDPO is 0.659221; at h = 1 DPO is 0.644397, "
    "cDPO 0.654397)",
    only=(("loss_type", ("cdpo",)),))
_FLOAT32_TILES = Deviation(
    "trl's fused LM head (trl.kernels.chunked_logprob) computes the logits and log-softmax in float32 tiles for "
    "float64 inputs: the loss comes back with float32 accuracy (measured, 4-sequence cases, V = 11: DPO sigmoid off "
    "by 8.0e-8, IPO by 5.9e-6 at a loss of 36.6; GRPO by 9.3e-9; the naive float64 code is exact to 1e-15)")
# The same float32 tiles seen through the gradient: against central differences of the float64 loss the float32
# rounding of the hidden states' gradient shows where the loss's slope is large and hides where it is small, so
# whether an example exceeds the float64 tolerance depends on the drawn case (measured: d/d hidden 9.97e-10 off
# against 2.5e-10 allowed, sigmoid loss, N = 2, V = 2): not strict.
_FLOAT32_TILES_GRADIENT = Deviation(_FLOAT32_TILES.reason + "; its gradients likewise (measured: d/d hidden 9.97e-10 "
                                   "off against a float64 tolerance of 2.5e-10)", strict=False)
_DPO_ACCEPTS = Deviation(
    "DPOTrainer.compute_loss does not validate its batch: an odd batch (chunk(2) splits it unevenly), a token id "
    "outside the vocabulary and a completion mask of 2s were accepted and returned a finite loss",
    only=(("case", ("odd batch", "token id outside the vocabulary", "mask of 2s")),))
_GRPO_ACCEPTS = Deviation(
    "GRPOTrainer._compute_loss accepted completion ids outside the vocabulary and returned a finite loss",
    only=(("case", ("ids outside the vocabulary",)),))
_TRL_DEFAULTS = Deviation(
    "trl 1.16's GRPO defaults are not DeepSeekMath's: loss_type 'dapo' (a token mean over the batch) instead of "
    "per-sequence means, and beta = 0 (no KL penalty, no reference model) instead of 0.04 (measured on the test's "
    "off-policy case, N = 4, T = 6, V = 11: 0.0928594, which is the spec with dapo and beta = 0, where DeepSeekMath's "
    "loss is 0.2611993)")
_BIAS_CORRECTED_KL = Deviation(
    "trl 1.16 defaults to use_bias_correction_kl=True: the k3 penalty is multiplied by the importance ratio rho "
    "(DeepSeek-V3.2), so off-policy with beta != 0 the loss is not DeepSeekMath's (measured, beta = 0.04, N = 4, "
    "T = 6: grpo 0.2623810 vs 0.2611993, bnpo 0.1158815 vs 0.1163737; and 1.87291 vs 1.87084 at temperature 0.6)",
    only=(("loss_type", ("grpo", "bnpo", "dr_grpo", "dapo")),))

_STD_PLUS_EPS = Deviation(
    "trl divides by the sample std + 1e-4 (a fixed epsilon, whatever eps asks), so the advantages' std is "
    "sigma / (sigma + 1e-4), not 1 (measured: 0.999827 for r = [1,0,0,1]; 0.99830 for sigma = 0.0577); and it has no "
    "population std (scale_rewards is 'group', 'batch' or 'none'): asked for one, it gives the sample std's")
_NO_POPULATION_STD = Deviation(
    "trl has no population std: r = [1,0,0,1] gives A = +-0.865875 (sample std + 1e-4) where the population std "
    "gives +-1")

# The differential test (test_matches_spec.py) draws the whole domain: options omitted, prompt-free completions,
# padded positions, 48 tokens over a vocabulary of 2048. What it found of trl, measured:
_IPO_LENGTH = (
    "trl's IPO divides each sequence's log-prob by its number of completion tokens counting the first token, which "
    "has no log-prob (no logit predicts it): for a prompt-free completion (mask[0] = 1) h-bar is averaged over one "
    "token too many (measured, T = 12, V = 50, beta = 0.1, full mask: 53.0612 where the spec gives 56.8115; "
    "the same case with a prompt matches to 4e-7)")
_DPO_DIFFERENTIAL_FLOAT64 = Deviation(
    _FLOAT32_TILES.reason + " (measured on the whole domain: 2.81e-5 off at a loss of 169.13, hinge 3.77e-9 at "
    "0.8518; d/d hidden 1.3e-20 off on entries of 3.6e-16); and " + _IPO_LENGTH, strict=False)
_TRL_OMITTED = (
    "an option left out takes trl's default, not DeepSeekMath's (" + _TRL_DEFAULTS.reason + "; measured on the "
    "whole domain: beta omitted, 0 where the spec gives 1.69554e-5; loss_type omitted, -0.160666 where the spec "
    "gives -0.103285)")
_GRPO_DIFFERENTIAL_FLOAT64 = Deviation(
    _FLOAT32_TILES.reason + " (measured on the whole domain: 4.0e-8 off at a loss of 0.7757, d/d hidden 4.3e-8 "
    "off on entries of 0.1); and " + _TRL_OMITTED, strict=False)
_BIAS_CORRECTED_NAN = (
    "with use_bias_correction_kl=True trl multiplies k3 by the ratio exp(logp - old) at every position, then by "
    "the mask: a padded position whose old log-prob is low enough overflows, and inf x 0 makes the loss NaN "
    "(measured: N = 2, T = 4, V = 11, beta = 0.04, one padded position with old log-prob -100: NaN where the spec "
    "gives 1.93497e-4; at -80 trl gives 1.93536e-4)")

_EPS_NOT_AN_OPTION = Deviation("trl has no epsilon option (it adds a fixed 1e-4), so a negative eps is not rejected",
                               only=(("case", ("negative eps",)),))

_DPO_NOTES = ("DPOTrainer.compute_loss with a tiny random Llama whose backbone returns the given hidden states and "
              "whose LM head is the given weight (trl's fused LM head, precomputed reference log-probs)")
_GRPO_NOTES = ("GRPOTrainer._compute_loss (eval mode) with the given hidden states and LM head weight; options "
               "passed to the trainer (left None: trl's defaults); num_items_in_batch = active tokens")

_L = "implementations.thirdparty.preference.liger_losses"
_LIGER = ("liger_kernel",)
_LIGER_NOTES = ("liger_kernel.chunked_loss, pure torch (compiled=False, chunk_size=1); Liger computes the "
                "log-softmax in float32 and returns a float32 loss for every input dtype, widened to float64 "
                "(exactly) by the adapter")

_LIGER_EMPTY_CHOSEN = (
    "Liger's DPO is NaN when no chosen sequence of the batch has a completion token: it divides its NLL term (0, "
    "compute_nll_loss=False) by the number of chosen completion tokens, 0 / 0 (measured: B = 1, T = 2, H = 1, V = 2, "
    "chosen completion mask all 0: NaN where the spec gives 0.698277; any rejected mask)")
_LIGER_DPO_FLOAT32 = (
    "Liger computes the log-softmax in float32 (log_softmax(logits.float())) and accumulates the loss in a float32 "
    "scalar for float64 inputs: float32 accuracy (measured: sigmoid 2.56e-8 off at a loss of 0.7066, robust 2.92e-8, "
    "hinge 3.84e-8, against a float64 budget of ~2e-15; 3.54e-5 off at a loss of 174.23)")
_LIGER_DPO_ACCEPTS = Deviation(
    "LigerFusedLinearDPOFunction validates nothing here: an odd batch (torch.chunk splits it unevenly), a completion "
    "mask of 2s and reference log-probs of shape (2B,) instead of (B,) were accepted and returned a finite loss",
    only=(("case", ("odd batch", "mask of 2s", "ref log-probs per sequence")),))
_LIGER_DPO_BF16 = Deviation(
    "bfloat16: Liger rounds the logits to bfloat16 (the matmul in the inputs' dtype) before its float32 log-softmax; "
    "its loss can exceed 2x the naive bfloat16 code's error (measured, sigmoid: 0.00732 off at a loss of 3.752 where "
    "the naive code is 0.00183 off)", only=(("dtype", ("bfloat16",)),), strict=False)

_LIGER_MASKED_NAN = (
    "Liger masks by multiplying: its ratio exp(logp - old) and k3 exp(ref - logp) - (ref - logp) - 1 are computed "
    "(in float32) at every position, then times the mask, so a masked position whose exp overflows makes the loss "
    "and its gradient NaN (inf x 0). With valid inputs (measured, liger_losses.py docstring: one padded position, "
    "policy log-prob -90 of the padding id, reference log-prob 0 there, beta = 0.04): NaN where the spec gives "
    "-0.99918; at log-prob -88 Liger gives -0.99918 too (the overflow starts at ref - logp > 88.72). The suite's "
    "masked-position values (reference + 40, old - 40; up to +-1e3) hit it in float32 and float64 inputs alike")
_LIGER_GRPO_FLOAT32 = (
    "Liger computes the log-probs (float32 logits and online softmax), the loss and its accumulator in float32 for "
    "float64 inputs: float32 accuracy (measured: 1.13e-7 off at a loss of 1.8577 (grpo, bnpo, dapo), 2.83e-8 at "
    "0.4644 (dr_grpo), 1.53e-7 at DeepSeekMath's 0.2611993, against float64 budgets of ~1e-14)")
_LIGER_GRPO_ACCEPTS = Deviation("LigerFusedLinearGRPOFunction accepted completion ids outside the vocabulary and "
                                "returned a loss", only=(("case", ("ids outside the vocabulary",)),))

_FLOAT32_LOSS = {"loss": ("float32",)}  # Liger's loss is float32 whatever the inputs' dtype (liger_losses.py)

for _impl in (
    Implementation("dpo.fused_linear_dpo_loss", "thirdparty.liger", f"{_L}:dpo_loss", "thirdparty",
                   devices=("cpu",), dtypes=("float32", "bfloat16"), modules=_LIGER, provides=_GRAD,
                   output_dtypes=_FLOAT32_LOSS,
                   deviations={"dpo.operations_match_spec": Deviation(_LIGER_EMPTY_CHOSEN, strict=False),
                               "dpo.fused_matches_spec": _LIGER_DPO_BF16, "dpo.dpo_contract": _LIGER_DPO_ACCEPTS},
                   notes="LigerFusedLinearDPOFunction with the given reference log-probs; " + _LIGER_NOTES
                         + "; no cDPO, no IPO (unsupported)"),
    Implementation("dpo.fused_linear_dpo_loss", "thirdparty.liger_float64", f"{_L}:dpo_loss", "thirdparty",
                   devices=("cpu",), dtypes=("float64",), modules=_LIGER, provides=_GRAD, output_dtypes=_FLOAT32_LOSS,
                   deviations={"dpo.operations_match_spec": Deviation(
                       _LIGER_DPO_FLOAT32 + "; and " + _LIGER_EMPTY_CHOSEN + " (a drawn case whose loss float32 "
                       "holds exactly shows neither)", strict=False),
                               "dpo.fused_matches_spec": Deviation(_LIGER_DPO_FLOAT32),
                               "dpo.gradient_matches_derivation": Deviation(_LIGER_DPO_FLOAT32 + "; its gradients "
                                                                            "likewise", strict=False),
                               "dpo.dpo_contract": _LIGER_DPO_ACCEPTS},
                   notes="LigerFusedLinearDPOFunction with the given reference log-probs, float64 inputs; "
                         + _LIGER_NOTES + "; no cDPO, no IPO (unsupported)"),
    Implementation("grpo.fused_linear_grpo_loss", "thirdparty.liger", f"{_L}:grpo_loss", "thirdparty",
                   devices=("cpu",), dtypes=("float32", "bfloat16"), modules=_LIGER, provides=_GRAD,
                   output_dtypes=_FLOAT32_LOSS,
                   deviations={"grpo.operations_match_spec": Deviation(_LIGER_MASKED_NAN, strict=False),
                               "grpo.masked_tokens_never_matter": Deviation(_LIGER_MASKED_NAN),
                               "grpo.grpo_contract": _LIGER_GRPO_ACCEPTS},
                   notes="LigerFusedLinearGRPOFunction (use_bias_correction_kl=False); " + _LIGER_NOTES),
    Implementation("grpo.fused_linear_grpo_loss", "thirdparty.liger_float64", f"{_L}:grpo_loss", "thirdparty",
                   devices=("cpu",), dtypes=("float64",), modules=_LIGER, provides=_GRAD, output_dtypes=_FLOAT32_LOSS,
                   deviations={"grpo.operations_match_spec": Deviation(
                       _LIGER_GRPO_FLOAT32 + "; and " + _LIGER_MASKED_NAN + " (a drawn case whose loss float32 "
                       "holds exactly, e.g. 0, shows neither)", strict=False),
                               "grpo.fused_matches_spec": Deviation(_LIGER_GRPO_FLOAT32),
                               "grpo.deepseekmath_defaults": Deviation(_LIGER_GRPO_FLOAT32),
                               "grpo.masked_tokens_never_matter": Deviation(_LIGER_MASKED_NAN),
                               "grpo.grpo_contract": _LIGER_GRPO_ACCEPTS},
                   notes="LigerFusedLinearGRPOFunction (use_bias_correction_kl=False), float64 inputs; "
                         + _LIGER_NOTES),
    Implementation("dpo.fused_linear_dpo_loss", "thirdparty.trl", f"{_M}:dpo_loss", "thirdparty", devices=("cpu",),
                   dtypes=_F32, modules=_NEEDS, provides=_GRAD, notes=_DPO_NOTES,
                   deviations={"dpo.fused_matches_spec": _NO_CDPO, "dpo.dpo_contract": _DPO_ACCEPTS,
                               "dpo.operations_match_spec": Deviation(_IPO_LENGTH, strict=False)}),
    Implementation("dpo.fused_linear_dpo_loss", "thirdparty.trl_float64", f"{_M}:dpo_loss", "thirdparty",
                   devices=("cpu",), dtypes=("float64",), modules=_NEEDS, provides=_GRAD,
                   notes=_DPO_NOTES + "; float64 inputs",
                   deviations={"dpo.fused_matches_spec": _FLOAT32_TILES, "dpo.dpo_contract": _DPO_ACCEPTS,
                               "dpo.gradient_matches_derivation": _FLOAT32_TILES_GRADIENT,
                               "dpo.operations_match_spec": _DPO_DIFFERENTIAL_FLOAT64}),
    Implementation("grpo.fused_linear_grpo_loss", "thirdparty.trl", f"{_M}:grpo_loss", "thirdparty",
                   devices=("cpu",), dtypes=_F32, modules=_NEEDS, provides=_GRAD,
                   notes=_GRPO_NOTES + "; the KL is DeepSeekMath's k3 (use_bias_correction_kl=False)",
                   deviations={"grpo.deepseekmath_defaults": _TRL_DEFAULTS, "grpo.grpo_contract": _GRPO_ACCEPTS,
                               "grpo.operations_match_spec": Deviation(_TRL_OMITTED, strict=False)}),
    Implementation("grpo.fused_linear_grpo_loss", "thirdparty.trl_float64", f"{_M}:grpo_loss", "thirdparty",
                   devices=("cpu",), dtypes=("float64",), modules=_NEEDS, provides=_GRAD,
                   notes=_GRPO_NOTES + "; float64 inputs",
                   deviations={"grpo.fused_matches_spec": _FLOAT32_TILES, "grpo.deepseekmath_defaults": _TRL_DEFAULTS,
                               "grpo.grpo_contract": _GRPO_ACCEPTS,
                               "grpo.operations_match_spec": _GRPO_DIFFERENTIAL_FLOAT64}),
    Implementation("grpo.fused_linear_grpo_loss", "thirdparty.trl_bias_corrected_kl",
                   f"{_M}:grpo_loss_bias_corrected_kl", "thirdparty", devices=("cpu",), dtypes=_F32, modules=_NEEDS,
                   provides=_GRAD, notes=_GRPO_NOTES + "; trl's default KL (use_bias_correction_kl=True)",
                   deviations={"grpo.fused_matches_spec": _BIAS_CORRECTED_KL,
                               "grpo.deepseekmath_defaults": _TRL_DEFAULTS, "grpo.grpo_contract": _GRPO_ACCEPTS,
                               "grpo.operations_match_spec": Deviation(
                                   _BIAS_CORRECTED_KL.reason + "; " + _BIAS_CORRECTED_NAN + "; and " + _TRL_OMITTED,
                                   strict=False)}),
    Implementation("grpo.group_advantages", "thirdparty.trl", f"{_M}:group_advantages", "thirdparty",
                   devices=("cpu",), dtypes=_F32, modules=_NEEDS,
                   deviations={"grpo.advantages_zero_sum": _STD_PLUS_EPS,
                               "grpo.advantages_known_answers": _NO_POPULATION_STD,
                               "grpo.grpo_contract": _EPS_NOT_AN_OPTION,
                               "grpo.operations_match_spec": Deviation(
                                   _STD_PLUS_EPS.reason + " (measured on the whole domain: +-0.707062 where the spec "
                                   "gives +-0.707107, a group of two)", strict=False)},
                   notes="GRPOTrainer._generate_and_score_completions (a tiny random Llama generates 2 tokens per "
                         "completion; a reward function returns the given rewards): std sample -> "
                         "scale_rewards='group', none -> 'none', population -> 'group'"),
):
    REGISTRY.add_implementation(_impl)
