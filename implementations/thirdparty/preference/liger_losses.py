"""Liger-Kernel 0.8.5's chunked preference losses (liger_kernel.chunked_loss) as implementations of the fused DPO and
GRPO operations, pure torch on the CPU (compiled=False: no torch.compile, no Triton).

* DPO: ``LigerFusedLinearDPOFunction`` (what ``LigerFusedLinearDPOLoss`` applies). Liger scores ``target[:, t]``
  with ``hidden[:, t]`` (no shift) and takes the reference's hidden states and LM head, not precomputed reference
  log-probs; so the adapter shifts (hidden[:, :-1] scores input_ids[:, 1:], positions outside the completion mask
  set to ignore_index) and hands the given ref_chosen_logps / ref_rejected_logps to Liger's own
  ``preference_loss_fn`` (its ``ref_chosen_logps=`` / ``ref_rejected_logps=`` arguments, the ones Liger fills from
  its reference model) chunk by chunk, split as Liger splits the batch (torch.chunk into max(1, N // 2) chunks of
  one pair: chunk_size = 1, Liger's default). Everything else - the LM head, the float32 log-softmax, the loss
  variants, the chunked gradients (torch.func.grad_and_value) - is Liger's code.
  Loss types: sigmoid -> "sigmoid", robust -> "robust", hinge -> "hinge". Liger has no conservative DPO (its
  "sigmoid" ignores label_smoothing) and no IPO (its "ipo" raises NotImplementedError: it would need per-sequence
  token counts): both raise NotImplementedError here, reported as unsupported.
* GRPO: ``LigerFusedLinearGRPOFunction`` (what ``LigerFusedLinearGRPOLoss`` applies), hidden[:, t] scoring
  completion_ids[:, t] as the operation does; ref_per_token_logps / old_per_token_logps passed through;
  use_ref_model only when ref_logps is given; max_completion_length defaults to T (Liger requires it for dr_grpo);
  epsilon_high defaults to epsilon_low; use_bias_correction_kl=False (DeepSeekMath's k3). Loss types grpo, bnpo,
  dr_grpo, dapo are all Liger's (its dapo divides by the active tokens of the batch: bnpo on one process).

Liger computes the log-softmax in float32 whatever the input dtype and accumulates the loss in a float32 scalar, so
it returns a float32 loss for every input dtype. The adapters return it as is, and their registration declares it
(``output_dtypes={"loss": ("float32",)}``, beside the operation's rule: the inputs' dtype or float64); what float32
costs in accuracy for float64 inputs is measured and declared in implementations/thirdparty/preference/__init__.py.

``cdpo_as_sigmoid`` is a deliberately wrong variant (not registered): it maps cDPO to Liger's plain sigmoid loss.

The GRPO padded-position NaN (float32): Liger's k3 is exp(ref - logp) - (ref - logp) - 1 computed at every position,
then multiplied by the mask. At a padded position the policy's log-prob of the padding id can be very negative
while the caller's reference log-prob there is 0 (zero-filled padding): exp(0 - logp) overflows float32 once
logp < -88.72, inf * 0 = NaN, and the whole loss (and its gradient) is NaN; the spec masks before any arithmetic.
Minimal reproduction (valid inputs: every log-prob <= 0, position 1 of sequence 0 padded)::

    import torch
    from liger_kernel.chunked_loss.grpo_loss import LigerFusedLinearGRPOFunction
    V, H = 4, 2
    weight = torch.tensor([[1., 0.], [0., 1.], [0., 0.], [-1., 0.]])
    hidden = torch.tensor([[[0.5, 0.5], [100., 0.]]])        # position 1: logit of id 3 is -100, log-prob -200
    ids = torch.tensor([[1, 3]])
    mask = torch.tensor([[1, 0]])                            # position 1 is padding
    ref = torch.tensor([[-1.3, 0.0]])                        # reference log-probs, 0 at the padded position
    loss, _ = LigerFusedLinearGRPOFunction.apply(hidden, weight, ids, mask, torch.tensor([1.0]), None, ref, None,
                                                 None, None, None, 0.04, 0.2, 0.2, "grpo", None, "token", 1.0,
                                                 1.05, 1.0, False, True, 1)
    # loss is nan (and d loss / d hidden at the padded position); specs.grpo.fused_linear_grpo_loss gives -0.99918.
    # With hidden[0, 1] = [44, 0] (log-prob -88) Liger gives -0.99918 too: the overflow starts at ref - logp > 88.72
"""

from __future__ import annotations

import torch

from specs import grpo as grpo_spec

IGNORE_INDEX = -100
_DPO_LOSS_TYPES = {"sigmoid": "sigmoid", "robust": "robust", "hinge": "hinge"}
_UNSUPPORTED = {
    "cdpo": "Liger-Kernel 0.8.5 has no conservative DPO: its 'sigmoid' loss ignores label_smoothing "
            "(label_smoothing is read only by 'robust' and 'exo_pair')",
    "ipo": "Liger-Kernel 0.8.5 has no IPO: LigerFusedLinearDPOFunction raises NotImplementedError for "
           "loss_type='ipo' (it would need per-sequence completion-token counts)",
}


def _dpo_function(ref_chosen_logps, ref_rejected_logps, chunks: int):
    """Liger's DPO Function whose preference_loss_fn gets the given reference log-probs, chunk by chunk."""
    from liger_kernel.chunked_loss.dpo_loss import LigerFusedLinearDPOFunction

    refs = iter(list(zip(torch.chunk(ref_chosen_logps, chunks), torch.chunk(ref_rejected_logps, chunks))))
    liger_loss = LigerFusedLinearDPOFunction.preference_loss_fn

    def preference_loss_fn(chosen_logps, rejected_logps, full_target, **kwargs):
        ref_c, ref_r = next(refs)
        return liger_loss(chosen_logps, rejected_logps, full_target, ref_chosen_logps=ref_c,
                          ref_rejected_logps=ref_r, **kwargs)

    return type("LigerDPOWithGivenReference", (LigerFusedLinearDPOFunction,),
                {"preference_loss_fn": staticmethod(preference_loss_fn)})


def _liger_dpo(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, *, beta,
               liger_loss_type, label_smoothing):
    target = torch.where(completion_mask[:, 1:] != 0, input_ids[:, 1:].long(), IGNORE_INDEX)
    N = hidden.shape[0]
    chunk_size = 1
    chunks = max(1, N // (2 * chunk_size))  # as LigerFusedLinearPreferenceBase.forward splits the batch
    fn = _dpo_function(ref_chosen_logps.detach(), ref_rejected_logps.detach(), chunks)
    loss, _aux = fn.apply(hidden[:, :-1], weight, target, None, None, None, None, IGNORE_INDEX, float(beta),
                          False, False, False, False, chunk_size, liger_loss_type, float(label_smoothing))
    return loss  # float32 whatever the inputs' dtype: declared (output_dtypes) where the adapters are registered


def dpo_loss(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, *, beta: float = 0.1,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0):
    """dpo.fused_linear_dpo_loss through LigerFusedLinearDPOFunction (compiled=False, use_ref_model=False with the
    given reference log-probs, compute_nll_loss=False, average_log_prob=False)."""
    if loss_type in _UNSUPPORTED:
        raise NotImplementedError(_UNSUPPORTED[loss_type])
    return _liger_dpo(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, beta=beta,
                      liger_loss_type=_DPO_LOSS_TYPES.get(loss_type, loss_type), label_smoothing=label_smoothing)


def cdpo_as_sigmoid(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, *,
                    beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0):
    """WRONG on purpose (not registered): cDPO mapped to Liger's plain sigmoid loss (label_smoothing ignored)."""
    if loss_type == "ipo":
        raise NotImplementedError(_UNSUPPORTED["ipo"])
    liger = "sigmoid" if loss_type == "cdpo" else _DPO_LOSS_TYPES.get(loss_type, loss_type)
    return _liger_dpo(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, beta=beta,
                      liger_loss_type=liger, label_smoothing=label_smoothing)


cdpo_as_sigmoid.eqspec_provides = {"grad"}


def grpo_loss(hidden, weight, completion_ids, completion_mask, advantages, old_logps=None, ref_logps=None, *,
              temperature: float = 1.0, beta: float = 0.04, epsilon_low: float = 0.2,
              epsilon_high: float | None = None, loss_type: str = "grpo", max_completion_length: int | None = None):
    """grpo.fused_linear_grpo_loss through LigerFusedLinearGRPOFunction (compiled=False, chunk_size=1)."""
    from liger_kernel.chunked_loss.grpo_loss import LigerFusedLinearGRPOFunction

    if beta != 0 and ref_logps is None:  # Liger would silently use the policy's own log-probs as the reference
        grpo_spec.check_grpo_loss_args(torch.empty(completion_ids.shape), old_logps, ref_logps, advantages,
                                       completion_mask, beta)
    T = completion_ids.shape[1]
    loss, _metrics = LigerFusedLinearGRPOFunction.apply(
        hidden, weight, completion_ids, completion_mask, advantages, None, ref_logps, old_logps, None, None, None,
        float(beta), float(epsilon_low), float(epsilon_low if epsilon_high is None else epsilon_high), loss_type,
        T if max_completion_length is None else max_completion_length, "token", 1.0, 1.05, float(temperature),
        False, ref_logps is not None, 1)
    return loss  # float32 whatever the inputs' dtype: declared (output_dtypes) where the adapters are registered

