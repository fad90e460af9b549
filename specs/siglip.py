"""SigLIP: the pairwise sigmoid loss for language-image pre-training, and its chunked multi-device form.

Paper: Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training" (arXiv:2303.15343), Algorithm 1 and §3.1
(efficient "chunked" implementation). Post: the seed's SigLIP overview. Code read beside it: big_vision
``trainers/proj/image_text/siglip.py`` and ``_deprecated_contrastive.py``, open_clip ``loss.py`` SigLipLoss.
Equations and conventions: catalogue/siglip.md.

Notation (Alg. 1): n pairs, x^ and y^ the L2-normalised image and text embeddings, t = exp(t') with the stored
t' (init ln 10), bias b (init -10), logits L_ij = t x^_i . y^_j + b, labels z_ij = +1 on the diagonal and -1
elsewhere, loss = -(1/n) sum_ij log sigmoid(z_ij L_ij): summed over all n^2 pairs, normalised by the batch size.
Everything here is float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from eqspec.contracts import ArgumentError
from eqspec.outputs import ONE_ELEMENT, Output
from eqspec.registry import claim, operation, spec

from .clip import grads_of_ranks, normalize
from .validators import check_pair, check_scalar, check_tensor, check_world

DOC = "siglip"
F64 = torch.float64
INIT_T_PRIME = math.log(10.0)  # big_vision SigLIP_demo: temperature_init = 10, stored as log
INIT_BIAS = -10.0  # big_vision SigLIP_demo: bias_init = -10
SCHEDULES = ("bidir", "shift")


@spec(DOC, latex=r"z_{ij} = 2\,[i=j] - 1", source="SigLIP Alg. 1 (labels = 2 * eye(n) - ones(n))")
def labels(n: int, offset: int = 0, rows: int | None = None, device=None) -> torch.Tensor:
    """The labels of the rows offset .. offset + rows - 1 against all n columns."""
    rows = n if rows is None else rows
    i = torch.arange(offset, offset + rows, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    return torch.where(i == j, 1.0, -1.0).to(F64)


@spec(DOC, latex=r"L_{ij} = e^{t'}\,\hat x_i\cdot\hat y_j + b",
      source="SigLIP Alg. 1 (logits = dot(zimg, ztxt.T) * t + b)")
def logits(x_hat: torch.Tensor, y_hat: torch.Tensor, t_prime: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.exp(t_prime) * x_hat @ y_hat.T + b


@operation(
    DOC,
    latex=r"\ell = -\frac1n\sum_{i}\sum_{j}\log\sigma(z_{ij}L_{ij})",
    source="SigLIP Alg. 1; big_vision siglip.py L287-306 (nll = -sum_j log_sigmoid(m1_diag1 * logits), mean_i)",
    returns="loss",
    summary="The sigmoid loss of a square logit matrix L (n, n) with the positives on the diagonal: "
            "-(1/n) sum over all n^2 pairs of log sigmoid(z_ij L_ij). Loss in L's dtype.",
    baseline="torch.eager",
    outputs=(Output("loss", shape=ONE_ELEMENT, dtype="L"),),
    capabilities=("grad",),
)
def pairwise_loss(L: torch.Tensor) -> torch.Tensor:
    check_tensor("L", L, rank=2)
    if L.shape[0] != L.shape[1]:
        raise ArgumentError("L", f"L must be square (n images x n texts), got shape {tuple(L.shape)}")
    n = L.shape[0]
    L64 = L.to(F64)
    return (-F.logsigmoid(labels(n, device=L.device) * L64).sum() / n).to(L.dtype)


@spec(DOC, latex=r"\frac{\partial\ell}{\partial L_{ij}} = \frac{\sigma(L_{ij}) - [i=j]}{n},\quad "
                 r"\frac{\partial\ell}{\partial b} = \frac1n\sum_{ij}\big(\sigma(L_{ij}) - [i=j]\big)",
      source="catalogue/siglip.md property 4 (d/dx -log sigma(z x) = -z sigma(-z x))")
def logits_gradient(L: torch.Tensor) -> torch.Tensor:
    n = L.shape[0]
    return (torch.sigmoid(L) - torch.eye(n, dtype=L.dtype, device=L.device)) / n


@operation(
    DOC,
    latex=r"\ell = -\frac1n\sum_{i,j}\log\sigma\big(z_{ij}\,(e^{t'}\hat x_i\cdot\hat y_j + b)\big)",
    source="SigLIP Alg. 1 (t = exp(t'), init t' = log 10, b = -10)",
    returns="loss",
    summary="SigLIP's loss on n pairs: image_features, text_features (n, D) are L2-normalised inside; t_prime is "
            "the stored log-temperature (t = exp t'), bias the learned bias b. Numbers or one-element tensors. "
            "Loss in the features' dtype.",
    convention="t_prime is the raw parameter t' (open_clip and transformers pass exp(t') as logit_scale).",
    baseline="torch.eager",
    outputs=(Output("loss", shape=ONE_ELEMENT, dtype="image_features"),),
    capabilities=("grad",),
)
def sigmoid_loss(image_features: torch.Tensor, text_features: torch.Tensor, t_prime, bias) -> torch.Tensor:
    check_pair(image_features, text_features)
    tp, b = check_scalar("t_prime", t_prime), check_scalar("bias", bias)
    x_hat, y_hat = normalize(image_features.to(F64)), normalize(text_features.to(F64))
    return pairwise_loss(logits(x_hat, y_hat, tp, b)).to(image_features.dtype)


@spec(DOC, latex=r"\mathrm{softplus}(x) = \log(1 + e^{x}) = \max(x, 0) + \log(1 + e^{-|x|})",
      source="the identity -log sigma(-x) = softplus(x)",
      convention="Exact for every x: torch.nn.functional.softplus returns x itself above its threshold 20, "
                 "dropping log(1 + e^{-x}) (about 2e-9 at x = 20), which float64 resolves.")
def softplus(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))


@spec(DOC, latex=r"\ell = \frac1n\Big[\sum_{ij}\mathrm{softplus}(L_{ij}) - \sum_i L_{ii}\Big]",
      source="open_clip loss.py SigLipLoss chunk_size path (L369): -log sigma(-x) = softplus(x), "
             "softplus(-x) - softplus(x) = -x")
def softplus_form(L: torch.Tensor) -> torch.Tensor:
    return (softplus(L).sum() - torch.diagonal(L).sum()) / L.shape[0]


@spec(DOC, latex=r"\ell = \mathrm{softplus}(-(t c + b)) + (n-1)\,\mathrm{softplus}(b)\quad"
                 r"(\hat x_i\cdot\hat y_j = c\,[i=j])",
      source="catalogue/siglip.md property 5: positives L_ii = t c + b, negatives L_ij = b (c = 1: orthonormal pairs, "
             "c = 0: every cosine 0)")
def orthogonal_loss(n: int, t: float, b: float, c: float = 1.0) -> float:
    softplus = lambda v: max(v, 0.0) + math.log1p(math.exp(-abs(v)))  # noqa: E731
    return softplus(-(t * c + b)) + (n - 1) * softplus(b)


# ---------------------------------------------------------------------------------------------------
# Chunking over image rows (memory O(chunk x n) instead of O(n^2))
# ---------------------------------------------------------------------------------------------------

def check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ArgumentError("chunk_size", f"chunk_size must be a positive integer, got {chunk_size!r}")
    return chunk_size


@operation(
    DOC,
    latex=r"\ell = \frac1n\sum_{c}\Big[\sum_{i\in c}\sum_j\mathrm{softplus}(L_{ij}) - \sum_{i\in c}L_{ii}\Big]",
    source="SigLIP §3.1; open_clip SigLipLoss(chunk_size>0) and tests/test_siglip_chunked_loss.py",
    returns="loss",
    summary="The sigmoid loss computed over chunks of chunk_size image rows (the last chunk may be shorter): "
            "only a (chunk_size, n) block of logits exists at a time. Same arguments and result as sigmoid_loss.",
    baseline="torch.eager",
    outputs=(Output("loss", shape=ONE_ELEMENT, dtype="image_features"),),
    capabilities=("grad",),
)
def chunked_sigmoid_loss(image_features: torch.Tensor, text_features: torch.Tensor, t_prime, bias, *,
                         chunk_size: int) -> torch.Tensor:
    n, _ = check_pair(image_features, text_features)
    c = check_chunk_size(chunk_size)
    tp, b = check_scalar("t_prime", t_prime), check_scalar("bias", bias)
    x_hat, y_hat = normalize(image_features.to(F64)), normalize(text_features.to(F64))
    total = torch.zeros((), dtype=F64, device=image_features.device)
    for i0 in range(0, n, c):
        L_c = logits(x_hat[i0:i0 + c], y_hat, tp, b)
        total = total - F.logsigmoid(labels(n, i0, L_c.shape[0], device=L_c.device) * L_c).sum()
    return (total / n).to(image_features.dtype)


# ---------------------------------------------------------------------------------------------------
# Multi-device: the local block, then the negative-only blocks of every other device
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\ell^{\rm neg}(x_d, y_{d'}) = \sum_{i\in d}\sum_{j\in d'}\mathrm{softplus}(L_{ij})",
      source="SigLIP §3.1; big_vision chunked_sigmoid_loss (L168); open_clip SigLipLoss._loss(negative_only=True)")
def negative_only_loss(x_hat, y_hat, t_prime, b) -> torch.Tensor:
    return -F.logsigmoid(-logits(x_hat, y_hat, t_prime, b)).sum()


@spec(DOC, latex=r"\ell^{\rm loc}(x_d, y_d) = -\sum_{i,j\in d}\log\sigma(z_{ij}L_{ij})",
      source="SigLIP §3.1 (each device first computes its own b x b block, positives on its diagonal)")
def local_block_loss(x_hat, y_hat, t_prime, b) -> torch.Tensor:
    L = logits(x_hat, y_hat, t_prime, b)
    return -F.logsigmoid(labels(L.shape[0], device=L.device) * L).sum()


@spec(DOC, latex=r"\text{bidir: round } k \text{ receives } d\pm k;\ \text{shift: step } k \text{ receives } d-k",
      source="open_clip loss.py SigLipLoss.forward (dist_impl 'bidir': divmod(W-1, 2) rounds of exchanges with the "
             "left and right neighbours, forwarding what was received, then one shift if W-1 is odd; 'shift': a ring)")
def exchange_schedule(world_size: int, schedule: str) -> list[list[int]]:
    """For each rank, the ranks whose text blocks it receives, in order."""
    W = world_size
    if schedule == "shift":
        return [[(d - k) % W for k in range(1, W)] for d in range(W)]
    if schedule != "bidir":
        raise ArgumentError("schedule", f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    rounds, remainder = divmod(W - 1, 2)
    out = []
    for d in range(W):
        seen = []
        for k in range(1, rounds + 1):
            seen += [(d + k) % W, (d - k) % W]  # from the right neighbour's forward chain, then the left's
        if remainder:
            seen.append((d - rounds - 1) % W)
        out.append(seen)
    return out


def check_schedule(schedule) -> str:
    if schedule not in SCHEDULES:
        raise ArgumentError("schedule", f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    return schedule


@operation(
    DOC,
    latex=r"L_d = \frac1b\Big[\ell^{\rm loc}(x_d,y_d) + \sum_{d'\ne d}\ell^{\rm neg}(x_d,y_{d'})\Big],\quad "
          r"\ell = \frac1D\sum_d L_d",
    source="SigLIP §3.1 (Figure 1); open_clip SigLipLoss (per-rank loss normalised by the local b)",
    returns="(losses, d_image, d_text, visits)",
    summary="SigLIP on world_size devices holding n / W consecutive pairs each: the loss each device reports (W,), "
            "the gradients its local features receive (its own backward through the text exchange, divided by W "
            "as DDP averages), laid out as the concatenated batch (n, D), and visits (W, W - 1) int64: the ranks "
            "whose text blocks each device received, in order. schedule: 'bidir' or 'shift'.",
    dtypes=("float64", "float32"),
    outputs=(
        Output("losses", shape="(world_size,)"),
        Output("d_image", shape="image_features.shape"),
        Output("d_text", shape="text_features.shape"),
        Output("visits", shape="(world_size, world_size - 1)"),
    ),
    capabilities=("grad", "full_world_only"),
)
def sharded_loss(image_features: torch.Tensor, text_features: torch.Tensor, t_prime, bias, *, world_size: int,
                 schedule: str = "bidir"):
    n, _ = check_pair(image_features, text_features)
    W = check_world(n, world_size)
    plan = exchange_schedule(W, check_schedule(schedule))
    tp, b = check_scalar("t_prime", t_prime).detach(), check_scalar("bias", bias).detach()
    leaves = [x.detach().to(F64).requires_grad_(True) for x in (image_features, text_features)]
    bl = n // W
    with torch.enable_grad():
        x_hat, y_hat = normalize(leaves[0]), normalize(leaves[1])
        block = lambda z, d: z[d * bl:(d + 1) * bl]  # noqa: E731
        losses = []
        for d in range(W):
            total = local_block_loss(block(x_hat, d), block(y_hat, d), tp, b)
            for src in plan[d]:
                total = total + negative_only_loss(block(x_hat, d), block(y_hat, src), tp, b)
            losses.append(total / bl)
        d_image, d_text = grads_of_ranks(losses, leaves, W)
    dt = image_features.dtype
    visits = torch.tensor(plan, dtype=torch.int64).reshape(W, W - 1)
    return torch.stack(losses).detach().to(dt), d_image.to(dt), d_text.to(dt), visits


# ---------------------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------------------

@operation(
    DOC,
    latex=r"t' = \ln 10\ (t = 10),\quad b = -10",
    source="SigLIP §3 / Alg. 1 ('t_prime = log(10), b = -10'); big_vision two_towers.py stores t = log(temperature)",
    returns="(t_prime, bias)",
    summary="The initial stored log-temperature t' and bias b of a freshly built model, as Python floats.",
    dtypes=("float64",),
    outputs=(Output("t_prime", kind="float"), Output("bias", kind="float")),
)
def initial_parameters() -> tuple[float, float]:
    return INIT_T_PRIME, INIT_BIAS


# ---------------------------------------------------------------------------------------------------
# Claims (catalogue/siglip.md)
# ---------------------------------------------------------------------------------------------------

LOSS, PAIR, CHUNK, SHARDED = (f"{DOC}.sigmoid_loss", f"{DOC}.pairwise_loss", f"{DOC}.chunked_sigmoid_loss",
                              f"{DOC}.sharded_loss")

claim(DOC, "loss_within_budget", kind="budget", operations=(LOSS,),
      statement="The loss and its gradients with respect to both feature sets are within the error budget of the "
                "float64 spec; "
                "a library's model (transformers' SiglipModel with return_loss=True) gives the spec's loss on its "
                "own embeddings, scale and bias.",
      source="SigLIP Alg. 1; design.md (error budgets)")
claim(DOC, "softplus_form", kind="identity", operations=(LOSS,),
      statement="The loss equals (1/n)[sum_ij softplus(L_ij) - sum_i L_ii] (float64).",
      source="catalogue/siglip.md property 1; open_clip chunk_size path")
claim(DOC, "chunked_equals_full", kind="identity", operations=(CHUNK,),
      statement="Chunking over image rows with any chunk size, the last chunk possibly shorter, gives the "
                "unchunked loss and gradients: float64 within the rounding of the terms summed, other dtypes "
                "within the budget of the float64 spec against the naive full-matrix baseline.",
      source="catalogue/siglip.md property 1; open_clip tests/test_siglip_chunked_loss.py")
claim(DOC, "sharded_equals_single", kind="identity", operations=(SHARDED,),
      statement="The multi-device scheme (local block with positives, then negative-only blocks of every other "
                "device): the mean of the devices' losses is the single-device loss on the concatenated batch, "
                "and the devices' feature gradients averaged over devices are its gradients (float64 within the "
                "rounding of the terms summed, float32 within budget), for both exchange schedules.",
      source="catalogue/siglip.md property 2; SigLIP §3.1")
claim(DOC, "every_block_once", kind="exact", operations=(SHARDED,),
      statement="Each device receives every other device's text block exactly once (bidir and shift schedules): "
                "its visits are a permutation of the other ranks.",
      source="catalogue/siglip.md property 2; open_clip #742 (repeated blocks)")
claim(DOC, "separability", kind="identity", operations=(PAIR,),
      statement="The loss is a sum of independent per-pair terms: a joint permutation of rows and columns leaves "
                "it unchanged, and moving one negative logit L_ij changes it by exactly "
                "(softplus(L'_ij) - softplus(L_ij)) / n (float64).",
      source="catalogue/siglip.md property 3")
claim(DOC, "logits_gradient", kind="identity", operations=(PAIR, LOSS),
      statement="d loss / d L_ij = (sigma(L_ij) - [i = j]) / n, d loss / d b = (1/n) sum_ij (sigma(L_ij) - "
                "[i = j]) and d loss / d t' = t sum_ij G_ij x^_i . y^_j (float64, autograd of the implementation "
                "against the formula).",
      source="catalogue/siglip.md property 4")
claim(DOC, "monotone", kind="exact", operations=(PAIR,),
      statement="The loss is >= 0, strictly decreasing in each positive (diagonal) logit and strictly increasing "
                "in each negative logit.",
      source="catalogue/siglip.md property 6")
claim(DOC, "closed_forms", kind="identity", operations=(LOSS,),
      statement="Orthonormal features at t' = ln 10, b = -10 give ln 2 + (n - 1) softplus(-10); features with "
                "every cosine 0 give softplus(10) + (n - 1) softplus(-10); any t', b: softplus(-(t + b)) + "
                "(n - 1) softplus(b) (float64, within the rounding of the logits).",
      source="catalogue/siglip.md property 5 and known answers")
claim(DOC, "known_answers", kind="known-answer", operations=(LOSS, CHUNK),
      statement="The catalogue's vectors: n = 4 orthonormal at t = 10, b = -10 gives 0.6932834; n = 4 with all "
                "cosines 0 gives 10.0001816; the 3-pair example gives 5.3965188, chunked or not.",
      source="catalogue/siglip.md, known answers")
claim(DOC, "initialisation", kind="exact", operations=(f"{DOC}.initial_parameters",),
      statement="A fresh model stores t' = ln 10 (t = 10) and b = -10.",
      source="SigLIP Alg. 1 and §4; big_vision SigLIP_demo (temperature_init=10, bias_init=-10)")
claim(DOC, "contract", kind="contract", operations=(LOSS, CHUNK, SHARDED),
      statement="Malformed input (feature shapes that differ, a rank other than 2, a non-finite t' or bias, a "
                "chunk size that is not a positive integer, an unknown schedule, a world size that does not "
                "divide n) is rejected with an error naming the argument.",
      source="design.md (bad input)")


# ---------------------------------------------------------------------------------------------------
# Domains: every argument over its whole range (eqspec/domain.py); the differential tests draw from them
# ---------------------------------------------------------------------------------------------------
# Features: any non-zero rows (normalised inside), with duplicated pairs, texts equal (or opposite) to their
# images, orthonormal pairs (every off-diagonal cosine exactly 0), D = 1 (cosines +-1); t' from a near-zero
# temperature to t ~ 1100, the bias across the logits' range; t' and b as numbers or one-element tensors.

from eqspec.domain import Built, Choice, Domain, Int, Optional, Real  # noqa: E402
from eqspec.registry import REGISTRY  # noqa: E402

SCALAR_FORMS = Choice(("number", "0-d", "1-element"))


def _pick(gen: torch.Generator, n: int) -> int:
    return int(torch.randint(0, n, (), generator=gen))


def _images(gen: torch.Generator, case: dict) -> torch.Tensor:
    n, D = case["n"] if "n" in case else case["world_size"] * case["bl"], case["D"]
    x = torch.randn(n, D, generator=gen, dtype=F64)
    kind = _pick(gen, 5)
    if kind == 0 and D >= n:
        x = torch.eye(n, D, dtype=F64)[torch.randperm(n, generator=gen)]  # orthonormal rows
    elif kind == 1 and n > 1:
        x[1::2] = x[0:n - 1:2][:x[1::2].shape[0]].clone()  # duplicated images
    elif kind == 2:
        x = x.abs()  # every cosine positive
    x = torch.where(x.norm(dim=-1, keepdim=True) == 0, torch.ones_like(x), x)  # no zero row
    scale = torch.exp(torch.randn(n, 1, generator=gen, dtype=F64) * case["spread"])
    return x * scale * case["fscale"]


def _texts(gen: torch.Generator, case: dict) -> torch.Tensor:
    x = case["image_features"]
    n, D = x.shape
    kind = _pick(gen, 5)
    if kind == 0:
        y = x * torch.exp(torch.randn(n, 1, generator=gen, dtype=F64))  # each text parallel to its image
    elif kind == 1:
        y = x + 0.1 * x.norm(dim=-1, keepdim=True) * torch.randn(n, D, generator=gen, dtype=F64) / math.sqrt(D)
    elif kind == 2:
        y = -x.flip(0)  # opposite of another pair's image
    else:
        y = torch.randn(n, D, generator=gen, dtype=F64) * case["fscale"]
    return torch.where(y.norm(dim=-1, keepdim=True) == 0, torch.ones_like(y), y)


def _scalar(size: str, form: str) -> Built:
    def build(gen, case):
        v = case[size]
        return {"number": v, "0-d": torch.tensor(v, dtype=F64),
                "1-element": torch.tensor([v], dtype=F64)}[case[form]]
    return Built(build, note=f"{size} as a number, a 0-d or a one-element tensor")


FEATURES = dict(image_features=Built(_images, note="features: orthonormal, duplicated, positive, random norms"),
                text_features=Built(_texts, note="texts: parallel, near, opposite or independent of the images"))
SCALARS = dict(t_prime=_scalar("tp", "tp_form"), bias=_scalar("b", "b_form"))
SCALAR_SIZES = dict(tp=Real(-5.0, 7.0, edges=(INIT_T_PRIME, 0.0, 7.0, -5.0)),
                    b=Real(-30.0, 30.0, edges=(INIT_BIAS, 0.0, -30.0, 30.0)), tp_form=SCALAR_FORMS, b_form=SCALAR_FORMS,
                    fscale=Real(1e-3, 1e3, edges=(1.0,), log=True), spread=Real(0.0, 3.0, edges=(0.0,)))


def _logit_matrix(gen: torch.Generator, case: dict) -> torch.Tensor:
    n = case["n"]
    L = torch.randn(n, n, generator=gen, dtype=F64) * case["lscale"] + case["offset"]
    kind = _pick(gen, 4)
    if kind == 0:
        L[:] = case["offset"]  # every logit tied
    elif kind == 1:
        L = L + torch.eye(n, dtype=F64) * case["lscale"] * 4  # the positives well above the negatives
    return L


FEATURE_SIZES = dict(n=Int(1, 12, edges=(1, 2)), D=Int(1, 16, edges=(1, 2)))

REGISTRY.attach_domain(PAIR, Domain(
    sizes=dict(n=Int(1, 12, edges=(1, 2)), lscale=Real(1e-3, 100.0, edges=(1.0, 10.0), log=True),
               offset=Real(-40.0, 40.0, edges=(INIT_BIAS, 0.0, 20.0, -20.0))),
    args=dict(L=Built(_logit_matrix, note="logits: spread, offset, ties, separated positives")),
    large=dict(n=1024),
))
REGISTRY.attach_domain(LOSS, Domain(
    sizes=dict(FEATURE_SIZES, **SCALAR_SIZES),
    args=dict(FEATURES, **SCALARS),
    large=dict(n=1024, D=64),
))
REGISTRY.attach_domain(CHUNK, Domain(
    sizes=dict(FEATURE_SIZES, **SCALAR_SIZES),
    args=dict(FEATURES, **SCALARS, chunk_size=Int(1, "n + 3", edges=(1, 2, 3))),
    large=dict(n=384, D=64),  # chunks of one row: 384 chunks
))
REGISTRY.attach_domain(SHARDED, Domain(
    sizes=dict(bl=Int(1, 4, edges=(1,)), D=Int(1, 16, edges=(1, 2)), **SCALAR_SIZES),
    # world_size first: the features hold world_size x bl pairs; gloo worlds have at most 4 ranks
    args=dict(world_size=Int(1, 4, edges=(1, 2, 3, 4)), schedule=Optional(Choice(SCHEDULES)),
              **FEATURES, **SCALARS),
))
REGISTRY.attach_domain(f"{DOC}.initial_parameters", Domain())


# ---------------------------------------------------------------------------------------------------
# Error analysis (eqspec/budget.py): the floor of each loss
# ---------------------------------------------------------------------------------------------------
# The loss adds n^2 pair terms (and the softplus form n diagonal logits besides) in whatever order the implementation
# chooses: row by row, chunk by chunk, pairwise. Any order is within gamma_m of the sum of what it adds (Higham §4.2),
# m the number of additions - the a-priori bound, not the random walk the spec's rounded runs show: 384 chunks of one
# row, each chunk's two partial sums added to a float64 total of ~1e4, measured 2.8e-13 from a long-double reference
# at a loss of 30, 20 times the spec's own error and 3 times the spread of its random roundings.

def term_sizes(L: torch.Tensor) -> torch.Tensor:
    """What each pair adds to the sum, (n, n): the term -log sigma(z L_ij) itself, and on the diagonal the softplus
    form's softplus(L_ii) and -L_ii, which cancel where L_ii is large. The rounding of the logits themselves is left
    to the naive baseline and the spec's rounded runs, which both make it."""
    L = L.detach().to(F64)
    z = labels(L.shape[0], device=L.device)
    return softplus(-z * L) + torch.diag(softplus(torch.diagonal(L)) + torch.diagonal(L).abs())


def pairwise_magnitudes(L: torch.Tensor):
    """(magnitude, terms) of pairwise_loss: the given logits round nothing more."""
    n = L.shape[0]
    return float(term_sizes(L).sum() / n), n * n + n


def _feature_logits(image_features, text_features, t_prime, bias):
    tp, b = check_scalar("t_prime", t_prime).detach(), check_scalar("bias", bias).detach()
    x_hat, y_hat = normalize(image_features.detach().to(F64)), normalize(text_features.detach().to(F64))
    return logits(x_hat, y_hat, tp, b)


def loss_magnitudes(image_features, text_features, t_prime, bias, **_):
    """(magnitude, terms) of sigmoid_loss and chunked_sigmoid_loss: pairwise_loss's, of the features' logits."""
    return pairwise_magnitudes(_feature_logits(image_features, text_features, t_prime, bias))


def sharded_magnitudes(image_features, text_features, t_prime, bias, *, world_size: int, **_):
    """(losses, d_image, d_text, visits, terms) of sharded_loss: each rank's loss sums its bl rows of pair terms, over
    bl; the gradients keep the default floor (their size)."""
    L = _feature_logits(image_features, text_features, t_prime, bias)
    n = L.shape[0]
    bl = n // world_size
    per_rank = term_sizes(L).sum(-1).reshape(world_size, bl).sum(-1) / bl
    return per_rank, None, None, None, bl * n + bl


REGISTRY.attach_magnitudes(PAIR, pairwise_magnitudes)
REGISTRY.attach_magnitudes(LOSS, loss_magnitudes)
REGISTRY.attach_magnitudes(CHUNK, loss_magnitudes)
REGISTRY.attach_magnitudes(SHARDED, sharded_magnitudes)
