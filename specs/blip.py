"""BLIP: image-text contrastive learning with momentum distillation, image-text matching with hard negatives,
language modelling with label smoothing, and CapFilt.

Paper: Li et al. 2022, "BLIP: Bootstrapping Language-Image Pre-training for Unified Vision-Language Understanding
and Generation" (arXiv:2201.12086), §3.2 (ITC, ITM, LM) and §3.3 (CapFilt); ITC with momentum distillation comes
from ALBEF (Li et al. 2021, arXiv:2107.07651, §3.3). Post: the seed's BLIP article. Code read beside it:
salesforce/BLIP ``models/blip_pretrain.py``, ``models/blip_retrieval.py``, ``models/med.py``. Equations and
conventions: catalogue/blip.md.

Notation: a batch of B pairs; online projections v (images), w (texts), momentum projections v_m, w_m, queues of
momentum features Q_v, Q_t (K x D); temperature tau; s^{i2t} = v [w_m; Q_t]^T / tau (online rows against
momentum columns). Everything here is float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eqspec.contracts import ArgumentError
from eqspec.domain import FLAG, Built, Choice, Domain, Int, Optional, Real, normal
from eqspec.outputs import ONE_ELEMENT, Output
from eqspec.registry import REGISTRY, claim, operation, spec

from .validators import check_dim, check_same, check_scalar, check_tensor, check_unit_interval

DOC = "blip"
F64 = torch.float64
MOMENTUM = 0.995  # configs/pretrain.yaml
ALPHA = 0.4  # configs/pretrain.yaml, ramped over the first 2 epochs
QUEUE_SIZE = 57600
TEMP_INIT, TEMP_MIN, TEMP_MAX = 0.07, 0.001, 0.5  # blip_pretrain.py: temp.clamp_(0.001, 0.5) each forward
HARD_NEGATIVE_FLOOR = 1e-4  # blip_pretrain.py L160: softmax(sim) + 1e-4
LABEL_SMOOTHING = 0.1  # med.py L912-915
IGNORE_INDEX = -100


# ---------------------------------------------------------------------------------------------------
# ITC with momentum distillation
# ---------------------------------------------------------------------------------------------------

@operation(
    DOC,
    latex=r"y = \alpha\,\mathrm{softmax}(s_m) + (1-\alpha)\,y^{\rm onehot}",
    source="ALBEF §3.3 (momentum distillation); blip_pretrain.py L121-124 (sim_targets on the diagonal)",
    returns="y",
    summary="The ITC soft targets from the momentum similarities sim_m (B, K), K >= B (the momentum batch's "
            "columns first, then the queue): alpha softmax(sim_m) + (1 - alpha) onehot, the one at column i of "
            "row i.",
    outputs=(Output("y", shape="sim_m.shape"),),
)
def soft_targets(sim_m: torch.Tensor, alpha: float) -> torch.Tensor:
    check_tensor("sim_m", sim_m, rank=2)
    B, K = sim_m.shape
    if K < B:
        raise ArgumentError("sim_m", f"sim_m must have at least as many columns as rows (B = {B} pairs first), got {K}")
    a = check_unit_interval("alpha", alpha)
    onehot = torch.zeros(B, K, dtype=F64, device=sim_m.device)
    onehot[torch.arange(B, device=sim_m.device), torch.arange(B, device=sim_m.device)] = 1.0
    return (a * torch.softmax(sim_m.to(F64), dim=1) + (1 - a) * onehot).to(sim_m.dtype)


def check_itc_args(v, w, v_m, w_m, queue_v, queue_t):
    names = ("image_feat", "text_feat", "image_feat_m", "text_feat_m", "image_queue", "text_queue")
    for name, x in zip(names, (v, w, v_m, w_m, queue_v, queue_t)):
        check_tensor(name, x, rank=2)
    check_same(names, (v, w, v_m, w_m, queue_v, queue_t), "dtype")
    for name, x in zip(names[1:4], (w, v_m, w_m)):
        if x.shape != v.shape:
            raise ArgumentError(name,
                                f"{name} must have image_feat's shape (B, D) = {tuple(v.shape)}, got {tuple(x.shape)}")
    for name, x in zip(names[4:], (queue_v, queue_t)):
        check_dim(name, x, 1, v.shape[1], "feature dim D, as image_feat.shape[1]")
    if queue_v.shape != queue_t.shape:
        raise ArgumentError("text_queue", f"text_queue must have image_queue's shape, got {tuple(queue_t.shape)} and "
                            f"{tuple(queue_v.shape)}")


@operation(
    DOC,
    latex=r"\mathcal L_{itc} = \tfrac12\Big[-\frac1B\sum_i\sum_j y^{i2t}_{ij}\log\mathrm{softmax}(s^{i2t}_i)_j"
          r" - \frac1B\sum_i\sum_j y^{t2i}_{ij}\log\mathrm{softmax}(s^{t2i}_i)_j\Big],\ "
          r"s^{i2t} = v[w_m;Q_t]^\top/\tau",
    source="BLIP §3.2 and blip_pretrain.py L97-140; ALBEF eq. (1)-(5)",
    returns="loss",
    summary="ITC with momentum distillation: online features image_feat, text_feat (B, D) against the momentum "
            "batch's features and the queues (K, D), temperature temp, distillation weight alpha. Soft targets "
            "from the momentum-vs-momentum similarities; nothing flows back into the momentum side or the queues.",
    baseline="torch.eager",
    outputs=(Output("loss", shape=ONE_ELEMENT, dtype="image_feat"),),
    capabilities=("grad",),
)
def itc_loss(image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue, temp, alpha) -> torch.Tensor:
    check_itc_args(image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue)
    tau = check_scalar("temp", temp)
    a = check_unit_interval("alpha", alpha)
    v, w = image_feat.to(F64), text_feat.to(F64)
    # the momentum side is a teacher: no gradient reaches it (BLIP computes it under torch.no_grad())
    v_m, w_m, Q_v, Q_t = (x.detach().to(F64) for x in (image_feat_m, text_feat_m, image_queue, text_queue))
    text_all, image_all = torch.cat([w_m, Q_t]), torch.cat([v_m, Q_v])
    with torch.no_grad():
        y_i2t = soft_targets(v_m @ text_all.T / tau.detach(), a)
        y_t2i = soft_targets(w_m @ image_all.T / tau.detach(), a)
    s_i2t, s_t2i = v @ text_all.T / tau, w @ image_all.T / tau
    loss_i2t = -(F.log_softmax(s_i2t, dim=1) * y_i2t).sum(1).mean()
    loss_t2i = -(F.log_softmax(s_t2i, dim=1) * y_t2i).sum(1).mean()
    return (0.5 * (loss_i2t + loss_t2i)).to(image_feat.dtype)


@spec(DOC, latex=r"\frac{\partial\mathcal L_{itc}}{\partial v} = \frac{1}{2B}\,\big(\mathrm{softmax}(s^{i2t}) - "
                 r"y^{i2t}\big)\,[w_m;Q_t]/\tau",
      source="catalogue/blip.md property 2 (d L_i2t / d s = (softmax(s) - y) / B); v enters only s^{i2t}")
def itc_image_gradient(v, w_m, Q_t, v_m, tau, alpha) -> torch.Tensor:
    text_all = torch.cat([w_m, Q_t])
    y = soft_targets(v_m @ text_all.T / tau, alpha)
    s = v @ text_all.T / tau
    return (torch.softmax(s, dim=1) - y) @ text_all / (tau * 2 * v.shape[0])


# ---------------------------------------------------------------------------------------------------
# The momentum encoder and the queue
# ---------------------------------------------------------------------------------------------------

@operation(
    DOC,
    latex=r"\theta_m \leftarrow m\,\theta_m + (1-m)\,\theta",
    source="BLIP §3.2 / ALBEF §3.3; blip_pretrain.py _momentum_update (L228)",
    returns="theta_m",
    summary="One EMA step of the momentum encoder's parameters theta_m towards the online theta (same shape) with "
            "momentum m in [0, 1] (BLIP: 0.995).",
    outputs=(Output("theta_m", shape="theta_m.shape", dtype="theta_m"),),
)
def momentum_update(theta_m: torch.Tensor, theta: torch.Tensor, m: float) -> torch.Tensor:
    check_tensor("theta_m", theta_m)
    check_tensor("theta", theta)
    if theta.shape != theta_m.shape:
        raise ArgumentError("theta",
                            f"theta must have theta_m's shape {tuple(theta_m.shape)}, got {tuple(theta.shape)}")
    m = check_unit_interval("m", m)
    return (m * theta_m.to(F64) + (1 - m) * theta.to(F64)).to(theta_m.dtype)


@spec(DOC, latex=r"\theta_m^{(k)} = \theta + m^k\big(\theta_m^{(0)} - \theta\big)",
      source="catalogue/blip.md property 3 (the EMA of a frozen theta)")
def ema_closed_form(theta_m0: torch.Tensor, theta: torch.Tensor, m: float, k: int) -> torch.Tensor:
    return theta + m**k * (theta_m0 - theta)


@operation(
    DOC,
    latex=r"Q[p:p+B] \leftarrow f_m,\quad p \leftarrow (p + B) \bmod K",
    source="blip_pretrain.py _dequeue_and_enqueue (asserts K % B == 0); ALBEF §3.3",
    returns="(queue, ptr)",
    summary="Enqueue the momentum features feats (B, D) of a batch into the FIFO queue (K, D) at pointer ptr; "
            "returns the new queue (a copy) and the new pointer. K must be a multiple of B.",
    outputs=(Output("queue", shape="queue.shape", dtype="queue"), Output("ptr", kind="int")),
)
def enqueue(queue: torch.Tensor, ptr: int, feats: torch.Tensor):
    check_tensor("queue", queue, rank=2)
    check_tensor("feats", feats, rank=2)
    K, B = queue.shape[0], feats.shape[0]
    check_dim("feats", feats, 1, queue.shape[1], "feature dim D, as queue.shape[1]")
    if K % B:
        raise ArgumentError("feats.shape[0]", f"feats.shape[0] (batch B = {B}) must divide the queue size K = {K}")
    if isinstance(ptr, bool) or not isinstance(ptr, int) or not 0 <= ptr < K or ptr % B:
        raise ArgumentError("ptr", f"ptr must be a multiple of B = {B} in [0, {K}), got {ptr!r}")
    new = queue.clone()
    new[ptr:ptr + B] = feats.detach().to(queue.dtype)
    return new, (ptr + B) % K


# ---------------------------------------------------------------------------------------------------
# ITM with hard negatives
# ---------------------------------------------------------------------------------------------------

def check_hard_negative_args(sim, ids) -> None:
    """sim square (B, B); ids None (pretraining) or one integer id per row of sim (retrieval)."""
    check_tensor("sim", sim, rank=2)
    if sim.shape[0] != sim.shape[1]:
        raise ArgumentError("sim", f"sim must be square (B anchors x B candidates), got {tuple(sim.shape)}")
    if ids is not None:
        check_tensor("ids", ids, rank=1, floating=False)
        check_dim("ids", ids, 0, sim.shape[0], "one id per row of sim")


@operation(
    DOC,
    latex=r"w_{ij} \propto \mathrm{softmax}(s_{i,:B})_j + 10^{-4},\ w_{ii} = 0\ \text{(pretrain)};\quad "
          r"w_{ij} \propto \mathrm{softmax}(s_i)_j\,[\mathrm{id}_i \ne \mathrm{id}_j]\ \text{(retrieval)}",
    source="blip_pretrain.py L156-163 (softmax + 1e-4, fill_diagonal_(0)); blip_retrieval.py (same-id mask)",
    returns="weights",
    summary="The hard-negative sampling weights of each row of a similarity matrix sim (B, B) (rows: the "
            "anchors, columns: candidates). Without ids (pretraining): softmax(sim) + 1e-4 with the diagonal set "
            "to 0; with ids (B,) (retrieval): softmax(sim) with every same-id entry set to 0. Unnormalised: "
            "torch.multinomial draws from them.",
    outputs=(Output("weights", shape="sim.shape", dtype="sim"),),
)
def hard_negative_weights(sim: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
    check_hard_negative_args(sim, ids)
    p = torch.softmax(sim.to(F64), dim=1)
    if ids is None:
        weights = p + HARD_NEGATIVE_FLOOR
        weights.fill_diagonal_(0.0)
    else:
        weights = p.masked_fill(ids[:, None] == ids[None, :], 0.0)
    return weights.to(sim.dtype)


@spec(DOC, latex=r"j \sim \mathrm{Multinomial}(w_i)", source="blip_pretrain.py L166-180 (torch.multinomial(w, 1))")
def sample_negatives(weights: torch.Tensor, draws: int, generator: torch.Generator) -> torch.Tensor:
    return torch.multinomial(weights.to(F64), draws, replacement=True, generator=generator)


def check_itm_args(itm_logits) -> int:
    check_tensor("itm_logits", itm_logits, rank=2)
    n, classes = itm_logits.shape
    if classes != 2 or n % 3:
        raise ArgumentError("itm_logits", f"itm_logits must have shape (3B, 2) (B positives, then B + B negatives), "
                            f"got {tuple(itm_logits.shape)}")
    return n // 3


@spec(DOC, latex=r"y^{itm} = [\underbrace{1\cdots1}_{B}\,\underbrace{0\cdots0}_{2B}]",
      source="blip_pretrain.py L188-190 (itm_labels = cat([ones(bs), zeros(2 * bs)]))")
def itm_labels(B: int, device=None) -> torch.Tensor:
    return torch.cat([torch.ones(B, dtype=torch.long), torch.zeros(2 * B, dtype=torch.long)]).to(device)


@operation(
    DOC,
    latex=r"\mathcal L_{itm} = \frac1{3B}\sum_{k}\mathrm{CE}\big(\mathrm{itm}_k, y^{itm}_k\big)",
    source="BLIP §3.2 (ITM); blip_pretrain.py L182-192",
    returns="loss",
    summary="The ITM loss of the itm head's logits (3B, 2) over B positive pairs (label 1), then B (text, hard "
            "negative image) and B (hard negative text, image) pairs (label 0): mean 2-way cross-entropy.",
    baseline="torch.eager",
    outputs=(Output("loss", shape=ONE_ELEMENT, dtype="itm_logits"),),
    capabilities=("grad",),
)
def itm_loss(itm_logits: torch.Tensor) -> torch.Tensor:
    B = check_itm_args(itm_logits)
    x = itm_logits.to(F64)
    y = itm_labels(B, x.device)
    return (torch.logsumexp(x, dim=1) - x[torch.arange(3 * B, device=x.device), y]).mean().to(itm_logits.dtype)


# ---------------------------------------------------------------------------------------------------
# LM with label smoothing
# ---------------------------------------------------------------------------------------------------

def check_lm_args(logits, input_ids, pad_token_id, smoothing):
    check_tensor("logits", logits, rank=3)
    check_tensor("input_ids", input_ids, rank=2, floating=False)
    if tuple(input_ids.shape) != tuple(logits.shape[:2]):
        raise ArgumentError("input_ids", f"input_ids must have shape (B, T) = {tuple(logits.shape[:2])} of logits, "
                            f"got {tuple(input_ids.shape)}")
    if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int):
        raise ArgumentError("pad_token_id", f"pad_token_id must be an integer, got {pad_token_id!r}")
    check_unit_interval("smoothing", smoothing)


@spec(DOC, latex=r"q = (1-\epsilon)\,\mathrm{onehot}(y) + \epsilon/V",
      source="med.py L912-915 (CrossEntropyLoss(label_smoothing=0.1)); PyTorch's label_smoothing semantics")
def smoothed_target(y: torch.Tensor, V: int, eps: float) -> torch.Tensor:
    return (1 - eps) * F.one_hot(y, V).to(F64) + eps / V


@operation(
    DOC,
    latex=r"\mathcal L_{lm} = \frac{1}{|\mathcal T|}\sum_{(b,k)\in\mathcal T} -\sum_v q_v\log\mathrm{softmax}"
          r"(z_{b,k})_v,\ \ \mathcal T = \{(b,k): x_{b,k+1}\ne\mathrm{pad}\}",
    source="BLIP §3.2 (LM); blip_pretrain.py L194-203 (pads -> -100); med.py L905-915 (shift by one, smoothing 0.1)",
    returns="loss",
    summary="The captioning loss: logits (B, T, V) at position k predict input_ids[:, k + 1] (shift by one); "
            "targets equal to pad_token_id are ignored; cross-entropy against the label-smoothed target "
            "(1 - eps) onehot + eps / V, averaged over the predicted tokens.",
    baseline="torch.eager",
    outputs=(Output("loss", shape=ONE_ELEMENT, dtype="logits"),),
    capabilities=("grad",),
)
def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, pad_token_id: int, *,
            smoothing: float = LABEL_SMOOTHING) -> torch.Tensor:
    check_lm_args(logits, input_ids, pad_token_id, smoothing)
    z, y = logits[:, :-1].to(F64), input_ids[:, 1:]
    keep = y != pad_token_id
    if not bool(keep.any()):
        raise ArgumentError("input_ids", "input_ids must hold at least one non-pad token after the first position")
    log_p = F.log_softmax(z[keep], dim=-1)
    q = smoothed_target(y[keep], z.shape[-1], float(smoothing))
    return (-(q * log_p).sum(-1).mean()).to(logits.dtype)


# ---------------------------------------------------------------------------------------------------
# CapFilt
# ---------------------------------------------------------------------------------------------------

@operation(
    DOC,
    latex=r"\mathcal D' = \{(I,T) \in \mathcal D_h\} \cup \{(I, T) \in \mathcal D_w \cup \mathcal D_s : "
          r"p_{itm}(\mathrm{match}\mid I,T) > \tfrac12\}",
    source="BLIP §3.3 (the filter removes web texts and synthetic captions that the ITM head predicts unmatched; "
           "human-annotated pairs are kept)",
    returns="kept",
    summary="CapFilt's filter over given captions (web texts and synthetic captions) with the filter's ITM match "
            "probabilities match_prob (N,) and a flag human (N,) for human-annotated pairs: keeps, in order, every "
            "human-annotated caption and every other caption whose match probability exceeds 1/2 (the ITM head's "
            "argmax is 'matched').",
    dtypes=("float64", "float32"),
    outputs=(Output("kept", kind="list[str]"),),
)
def capfilt(captions: list, match_prob: torch.Tensor, human: torch.Tensor) -> list:
    if not isinstance(captions, (list, tuple)) or not all(isinstance(c, str) for c in captions):
        raise ArgumentError("captions", "captions must be a list of str")
    check_tensor("match_prob", match_prob, rank=1)
    check_dim("match_prob", match_prob, 0, len(captions), "one probability per caption")
    if not isinstance(human, torch.Tensor) or human.dtype != torch.bool or tuple(human.shape) != (len(captions),):
        raise ArgumentError("human", f"human must be a bool tensor of shape ({len(captions)},)")
    p = match_prob.to(F64)
    if bool(((p < 0) | (p > 1) | torch.isnan(p)).any()):
        raise ArgumentError("match_prob", "match_prob must hold probabilities in [0, 1]")
    return [c for c, keep in zip(captions, (human | (p > 0.5)).tolist()) if keep]


# ---------------------------------------------------------------------------------------------------
# Claims (catalogue/blip.md)
# ---------------------------------------------------------------------------------------------------

ITC, TGT, ITM, LM = f"{DOC}.itc_loss", f"{DOC}.soft_targets", f"{DOC}.itm_loss", f"{DOC}.lm_loss"

claim(DOC, "losses_within_budget", kind="budget", operations=(ITC, ITM, LM),
      statement="The ITC, ITM and LM losses (and the ITC loss's gradients) are within the error budget of the "
                "float64 spec (2x / 3x the naive same-precision baseline's error + floor).",
      source="BLIP §3.2; design.md (error budgets)")
claim(DOC, "soft_targets_are_distributions", kind="identity", operations=(TGT,),
      statement="Soft targets are distributions (entries >= 0, rows sum to 1 within float64 rounding); alpha = 0 "
                "gives the one-hot targets exactly, alpha = 1 the momentum softmax.",
      source="catalogue/blip.md property 1")
claim(DOC, "itc_gradient", kind="identity", operations=(ITC,),
      statement="d L_itc / d v = (softmax(s^{i2t}) - y^{i2t}) [w_m; Q_t] / (2 B tau), from d L_i2t / d s = "
                "(softmax(s) - y) / B; no gradient reaches the momentum features or the queues (float64).",
      source="catalogue/blip.md property 2")
claim(DOC, "ema_closed_form", kind="identity", operations=(f"{DOC}.momentum_update",),
      statement="k momentum updates towards a frozen theta give theta + m^k (theta_m^(0) - theta) (float64, "
                "within k roundings).",
      source="catalogue/blip.md property 3")
claim(DOC, "queue_fifo", kind="exact", operations=(f"{DOC}.enqueue",),
      statement="The queue is a FIFO over slots: after K / B enqueues every slot was replaced exactly once, in "
                "order, by the enqueued batch's features, and the pointer is back at 0; the queue holds the "
                "features' values, not their graph (BLIP enqueues under torch.no_grad()).",
      source="catalogue/blip.md property 4; blip_pretrain.py _dequeue_and_enqueue (@torch.no_grad)")
claim(DOC, "sampler_never_positive", kind="exact", operations=(f"{DOC}.hard_negative_weights",),
      statement="The hard-negative weights are exactly 0 on the positive (pretraining) or every same-id entry "
                "(retrieval) and positive elsewhere in pretraining (+1e-4); 10^4 multinomial draws per row never "
                "return a masked index.",
      source="catalogue/blip.md property 5; pytorch #48841")
claim(DOC, "itm_labels", kind="identity", operations=(ITM,),
      statement="The ITM loss labels B pairs 1 and 2B pairs 0, in that order (read off the gradient: softmax - "
                "3B dL/dlogits is the one-hot label), and equals ln 2 at uniform logits.",
      source="catalogue/blip.md property 6")
claim(DOC, "label_smoothing", kind="identity", operations=(LM,),
      statement="The label-smoothed LM loss equals ln V at uniform logits for any eps, ignores the padded targets "
                "(their logits do not matter), predicts the next token (shift by one) and equals (1 - eps) CE + "
                "eps mean_v(-log p_v) (float64).",
      source="catalogue/blip.md property 7; med.py L905-915")
claim(DOC, "capfilt_rule", kind="exact", operations=(f"{DOC}.capfilt",),
      statement="CapFilt keeps exactly the human-annotated captions and the captions whose ITM match probability "
                "exceeds 1/2, in their original order.",
      source="BLIP §3.3")
claim(DOC, "known_answers", kind="known-answer", operations=(TGT, ITM, LM),
      statement="alpha = 0.4, momentum similarities [2, 0] give targets [0.952319, 0.047681]; ITM at uniform "
                "logits ln 2 = 0.693147; LM at uniform logits ln V.",
      source="catalogue/blip.md, known answers")
claim(DOC, "contract", kind="contract", operations=(ITC, f"{DOC}.enqueue", ITM, LM),
      statement="Malformed input (feature shapes that differ, a queue size not a multiple of the batch, a pointer "
                "off the batch grid, ITM logits not (3B, 2), input_ids not matching the logits) is rejected with "
                "an error naming the argument.",
      source="design.md (bad input); blip_pretrain.py (assert queue_size % batch_size == 0)")


# ---------------------------------------------------------------------------------------------------
# Domains: every argument over its whole range (eqspec/domain.py); the differential tests draw from them
# ---------------------------------------------------------------------------------------------------

def _randint(gen: torch.Generator, low: int, high: int) -> int:
    """One integer in [low, high) from the generator."""
    return int(torch.randint(low, high, (), generator=gen))


def _similarities(gen: torch.Generator, rows: int, cols: int, scale: float) -> torch.Tensor:
    """(rows, cols) similarities of spread ``scale``: Gaussian, or with ties (entries on a coarse grid, a constant
    row, a column repeated, every entry equal)."""
    x = torch.randn(rows, cols, generator=gen, dtype=F64)
    kind = _randint(gen, 0, 6)
    if kind == 1:
        x = torch.round(2 * x) / 2  # ties on a grid
    elif kind == 2:
        x[_randint(gen, 0, rows)] = x[0, 0]  # a constant row
    elif kind == 3:
        x[:, _randint(gen, 0, cols)] = x[:, 0]  # a repeated column (the positive tied with a negative)
    elif kind == 4:
        x = torch.full_like(x, float(x[0, 0]))  # all equal
    return x * scale


def _features(gen: torch.Generator, rows: int, D: int, case: dict) -> torch.Tensor:
    """(rows, D) features: L2-normalised as BLIP's projections (case["unit"]) or of spread case["fscale"]; a
    duplicated row now and then (tied similarities)."""
    x = torch.randn(rows, D, generator=gen, dtype=F64)
    if rows > 1 and _randint(gen, 0, 4) == 0:
        x[-1] = x[0]
    return F.normalize(x, dim=-1) if case["unit"] else x * case["fscale"]


def _drifted(name: str):
    """The momentum copy of feature ``name``: the online features moved by case["drift"] (0: identical)."""
    def build(gen, case):
        x = case[name]
        y = x + case["drift"] * torch.randn(x.shape, generator=gen, dtype=F64)
        return F.normalize(y, dim=-1) if case["unit"] else y
    return Built(build, note=f"{name} + drift")


def _queue(momentum: str):
    """A (K, D) queue of earlier momentum features; now and then holding copies of this batch's (``momentum``)
    rows, as after the batch was enqueued."""
    def build(gen, case):
        q = _features(gen, case["K"], case["D"], case)
        if _randint(gen, 0, 3) == 0:
            rows = min(case["K"], case["B"])
            q[:rows] = case[momentum][:rows]
        return q
    return Built(build, note="queue (K, D)")


def _temperature(gen, case):
    """temp as a number or as a one-element tensor (learnt in BLIP: the gradient reaches it)."""
    return torch.tensor(case["tau"], dtype=F64) if case["tau_tensor"] else case["tau"]


def _theta_shape(case) -> tuple[int, ...]:
    return (case["d0"], case["d1"], case["d0"] + 1)[:case["rank"]]


def _hard_negative_ids(gen, case):
    """ids (B,), int64 or int32: drawn among case["distinct"] values (duplicates; all equal when 1), or all distinct
    (a permutation)."""
    B = case["B"]
    ids = torch.randperm(B, generator=gen) if _randint(gen, 0, 4) == 0 else torch.randint(
        0, case["distinct"], (B,), generator=gen)
    return ids if _randint(gen, 0, 2) else ids.to(torch.int32)


def _itm_logits(gen, case):
    """(3B, 2) logits of spread case["scale"]; some rows tied (both logits equal), some with one huge margin."""
    x = torch.randn(3 * case["B"], 2, generator=gen, dtype=F64) * case["scale"]
    tied = torch.rand(3 * case["B"], generator=gen) < 0.2
    x[tied, 1] = x[tied, 0]
    return x


def _pad_token(gen, case):
    """A pad id in the vocabulary (0, the last id, any) or outside it (-100, V)."""
    V = case["V"]
    return [0, V - 1, _randint(gen, 0, V), -100, V][_randint(gen, 0, 5)]


def _caption_ids(gen, case):
    """(B, T) token ids in [0, V): rows right-padded with pad_token_id after a random length (a row may be all
    pads after its first token), pads also where a drawn id equals the pad; at least one target is not a pad."""
    B, T, V, pad = case["B"], case["T"], case["V"], case["pad_token_id"]
    ids = torch.randint(0, V, (B, T), generator=gen)
    for b in range(B):
        length = _randint(gen, 1, T + 1)
        ids[b, length:] = pad
    if not bool((ids[:, 1:] != pad).any()):
        ids[_randint(gen, 0, B), _randint(gen, 1, T)] = (pad + 1) % V if 0 <= pad < V else 0
    return ids


_CAPTIONS = ("a dog on a beach", "a dog on a beach", "", " ", "two cats", "A DOG ON A BEACH", "a photo of",
             "caption", "\n", "ein Hund")


def _captions(gen, case):
    """N captions from a small pool: duplicates, empty and blank strings."""
    return [_CAPTIONS[_randint(gen, 0, len(_CAPTIONS))] for _ in range(case["N"])]


def _match_prob(gen, case):
    """N match probabilities in [0, 1]: uniform, with exact 0, 1/2 (not kept: the rule is > 1/2) and 1, and values
    a hair either side of 1/2."""
    N = case["N"]
    p = torch.rand(N, generator=gen, dtype=F64)
    special = torch.tensor([0.0, 0.5, 1.0, 0.5 + 2**-40, 0.5 - 2**-40, 0.5 + 2**-20, 0.5 - 2**-20], dtype=F64)
    pick = torch.rand(N, generator=gen) < 0.5
    p[pick] = special[torch.randint(0, len(special), (int(pick.sum()),), generator=gen)]
    return p


def _human(gen, case):
    N, kind = case["N"], case["human_kind"]
    if kind == "none":
        return torch.zeros(N, dtype=torch.bool)
    if kind == "all":
        return torch.ones(N, dtype=torch.bool)
    return torch.rand(N, generator=gen) < 0.5


SCALE = Real(0.01, 1000.0, edges=(1.0, 1 / TEMP_INIT, 1 / TEMP_MIN), log=True)  # similarities / temperature
ALPHAS = Real(0.0, 1.0, edges=(0.0, ALPHA, 1.0))

REGISTRY.attach_domain(TGT, Domain(
    sizes=dict(B=Int(1, 6, edges=(1,)), Q=Int(0, 12, edges=(0,)), scale=SCALE),
    args=dict(sim_m=Built(lambda gen, case: _similarities(gen, case["B"], case["B"] + case["Q"], case["scale"]),
                          note="(B, B + Q) similarities"),
              alpha=ALPHAS),
    large=dict(Q=4096),
))
REGISTRY.attach_domain(ITC, Domain(
    sizes=dict(B=Int(1, 6, edges=(1,)), K=Int(1, 20, edges=(1,)), D=Int(1, 16, edges=(1,)), unit=FLAG,
               fscale=Real(0.1, 3.0, edges=(1.0,), log=True), drift=Real(0.0, 1.0, edges=(0.0, 0.1)),
               tau=Real(TEMP_MIN, 2.0, edges=(TEMP_MIN, TEMP_INIT, TEMP_MAX), log=True), tau_tensor=FLAG),
    args=dict(image_feat=Built(lambda gen, case: _features(gen, case["B"], case["D"], case), note="(B, D)"),
              text_feat=Built(lambda gen, case: _features(gen, case["B"], case["D"], case), note="(B, D)"),
              image_feat_m=_drifted("image_feat"), text_feat_m=_drifted("text_feat"),
              image_queue=_queue("image_feat_m"), text_queue=_queue("text_feat_m"),
              temp=Built(_temperature, note="a number or a one-element tensor"), alpha=ALPHAS),
    large=dict(K=4096, D=64),
))
REGISTRY.attach_domain(f"{DOC}.momentum_update", Domain(
    sizes=dict(rank=Int(0, 3, edges=(0, 1)), d0=Int(1, 5, edges=(1,)), d1=Int(1, 9, edges=(1,)),
               spread=Real(1e-3, 1e3, edges=(1.0,), log=True), drift=Real(0.0, 2.0, edges=(0.0, 1e-8))),
    args=dict(theta_m=Built(lambda gen, case: torch.randn(_theta_shape(case), generator=gen, dtype=F64)
                            * case["spread"], note="any shape, a 0-d tensor included"),
              theta=Built(lambda gen, case: case["theta_m"] + case["drift"] * case["spread"]
                          * torch.randn(_theta_shape(case), generator=gen, dtype=F64), note="theta_m + drift"),
              m=Real(0.0, 1.0, edges=(0.0, 0.5, MOMENTUM, 0.999, 1.0))),
))
REGISTRY.attach_domain(f"{DOC}.enqueue", Domain(
    sizes=dict(B=Int(1, 4, edges=(1,)), n=Int(1, 6, edges=(1, 2)), D=Int(1, 6, edges=(1,)),
               slot=Int(0, "n - 1", edges=(0,)), from_end=FLAG),
    args=dict(queue=normal("B * n", "D"),
              ptr=Built(lambda gen, case: case["B"] * ((case["n"] - 1 - case["slot"]) if case["from_end"]
                                                      else case["slot"]),
                        note="a multiple of B in [0, K): 0, the last slot (wrap-around), any"),
              feats=normal("B", "D", scale=10.0)),
    exact=("queue", "ptr"),
))
REGISTRY.attach_domain(f"{DOC}.hard_negative_weights", Domain(
    sizes=dict(B=Int(1, 8, edges=(1, 2)), distinct=Int(1, "B", edges=(1,)), scale=SCALE),
    args=dict(sim=Built(lambda gen, case: _similarities(gen, case["B"], case["B"], case["scale"]), note="(B, B)"),
              ids=Optional(Built(_hard_negative_ids, note="(B,) ids with duplicates, or distinct"))),
    large=dict(B=1024),
))
REGISTRY.attach_domain(ITM, Domain(
    sizes=dict(B=Int(1, 12, edges=(1,)), scale=Real(0.01, 300.0, edges=(1.0,), log=True)),
    args=dict(itm_logits=Built(_itm_logits, note="(3B, 2) logits, some rows tied")),
    large=dict(B=4096),
))
REGISTRY.attach_domain(LM, Domain(
    sizes=dict(B=Int(1, 3, edges=(1,)), T=Int(2, 10, edges=(2,)), V=Int(2, 40, edges=(2,)),
               sharp=Real(0.1, 30.0, edges=(1.0, 10.0), log=True)),
    args=dict(logits=normal("B", "T", "V", scale="sharp"),
              pad_token_id=Built(_pad_token, note="in the vocabulary or outside it"),
              input_ids=Built(_caption_ids, note="(B, T) ids, right-padded"),
              smoothing=Optional(Real(0.0, 1.0, edges=(0.0, LABEL_SMOOTHING, 1.0)))),
    large=dict(T=64, V=4096),
))
REGISTRY.attach_domain(f"{DOC}.capfilt", Domain(
    sizes=dict(N=Int(1, 16), human_kind=Choice(("none", "all", "some"))),
    args=dict(captions=Built(_captions, note="N strings with duplicates and empty ones"),
              match_prob=Built(_match_prob, note="(N,) in [0, 1], ties at 1/2"),
              human=Built(_human, note="(N,) bool: none, all or some")),
))
