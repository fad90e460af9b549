"""CLIP: contrastive language-image pre-training with a symmetric InfoNCE loss.

Paper: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision"
(arXiv:2103.00020), Figure 3 (numpy-like pseudocode) and §2.5. Post: the seed's CLIP article. Code read beside it:
openai/CLIP ``clip/model.py`` and open_clip ``src/open_clip/loss.py``. Equations and conventions:
catalogue/clip.md.

Notation: N pairs, image features I and text features T (N x D), L2-normalised to I^, T^; the learnable
temperature is stored as its log, ``logit_scale`` = t, and the logits are L = exp(t) I^ T^^T. The loss is the mean
of the two cross-entropies with the pairing on the diagonal (image -> text over the rows of L, text -> image over
its columns). Everything here is float64.
"""

from __future__ import annotations

import math

import torch

from eqspec.contracts import ArgumentError
from eqspec.outputs import ONE_ELEMENT, Output
from eqspec.registry import claim, operation, spec

from .validators import check_pair, check_scalar, check_tensor, check_world

DOC = "clip"
F64 = torch.float64
INIT_LOGIT_SCALE = math.log(1 / 0.07)  # openai/CLIP model.py L295: s_0 = 14.2857
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP §2.5: "clipped to prevent scaling the logits by more than 100"


# ---------------------------------------------------------------------------------------------------
# Argument checks shared by the contrastive documents (siglip and blip use them too)
# ---------------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\hat x = x / \lVert x\rVert_2", source="CLIP Fig. 3 (l2_normalize); open_clip model.py")
def normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


@spec(DOC, latex=r"L = e^{t}\,\hat I\,\hat T^\top", source="CLIP Fig. 3 (logits = np.dot(I_e, T_e.T) * np.exp(t))")
def logits(I_hat: torch.Tensor, T_hat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.exp(t) * I_hat @ T_hat.T


@spec(DOC, latex=r"\mathrm{CE}(L, y) = \frac1{N}\sum_i \big(\log\textstyle\sum_j e^{L_{ij}} - L_{i y_i}\big)",
      source="CLIP Fig. 3 (cross_entropy_loss); torch.nn.functional.cross_entropy, reduction='mean'")
def cross_entropy(L: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (torch.logsumexp(L, dim=1) - L[torch.arange(L.shape[0], device=L.device), y]).mean()


@operation(
    DOC,
    latex=r"\ell = \tfrac12\big[\mathrm{CE}(L, \mathrm{arange}\,N) + \mathrm{CE}(L^\top, \mathrm{arange}\,N)\big]",
    source="CLIP Fig. 3 ((loss_i + loss_t) / 2); open_clip loss.py ClipLoss.forward",
    returns="loss",
    summary="Symmetric InfoNCE of a square logit matrix L (N, N) whose pairs are on the diagonal: the mean of the "
            "row (image -> text) and column (text -> image) cross-entropies. Loss in L's dtype.",
    baseline="torch.eager",
    outputs=(Output("loss", shape=ONE_ELEMENT, dtype="L"),),
    capabilities=("grad",),
)
def contrastive_loss(L: torch.Tensor) -> torch.Tensor:
    check_tensor("L", L, rank=2)
    if L.shape[0] != L.shape[1]:
        raise ArgumentError("L", f"L must be square (N images x N texts), got shape {tuple(L.shape)}")
    L64 = L.to(F64)
    y = torch.arange(L.shape[0], device=L.device)
    return (0.5 * (cross_entropy(L64, y) + cross_entropy(L64.T, y))).to(L.dtype)


@spec(DOC, latex=r"\frac{\partial\ell}{\partial L} = \frac{(\mathrm{softmax}_{\rm row}(L) - I) + "
                 r"(\mathrm{softmax}_{\rm col}(L) - I)}{2N}",
      source="catalogue/clip.md property 5 (the gradient of softmax cross-entropy, per direction)")
def logits_gradient(L: torch.Tensor) -> torch.Tensor:
    N = L.shape[0]
    eye = torch.eye(N, dtype=L.dtype, device=L.device)
    return ((torch.softmax(L, dim=1) - eye) + (torch.softmax(L, dim=0) - eye)) / (2 * N)


@operation(
    DOC,
    latex=r"\ell = \tfrac12\big[\mathrm{CE}(L,\mathrm{arange}N) + \mathrm{CE}(L^\top,\mathrm{arange}N)\big],\quad "
          r"L = e^{t}\,\hat I\hat T^\top",
    source="CLIP Fig. 3 and §2.5; open_clip loss.py ClipLoss (features normalised by the model first)",
    returns="loss",
    summary="CLIP's loss on a batch of N pairs: image_features, text_features (N, D) are L2-normalised inside, "
            "logit_scale is the stored log-temperature t (scale exp(t)). Loss in the features' dtype.",
    convention="logit_scale is the raw parameter t (s = exp t), as CLIP stores it; libraries that take the "
               "exponentiated scale get exp(t).",
    baseline="torch.eager",
    outputs=(Output("loss", shape=ONE_ELEMENT, dtype="image_features"),),
    capabilities=("grad",),
)
def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale) -> torch.Tensor:
    check_pair(image_features, text_features)
    t = check_scalar("logit_scale", logit_scale)
    I_hat, T_hat = normalize(image_features.to(F64)), normalize(text_features.to(F64))
    return contrastive_loss(logits(I_hat, T_hat, t)).to(image_features.dtype)


@spec(DOC, latex=r"\ell = \ln\!\big(1 + (N-1)e^{-s}\big)\ \text{(orthonormal pairs)},\quad \ln N\ \text{(identical)}",
      source="catalogue/clip.md properties 3-4: each row's softmax has e^{s} on the diagonal, e^{0} elsewhere")
def orthonormal_loss(N: int, s: float) -> float:
    return math.log1p((N - 1) * math.exp(-s))


# ---------------------------------------------------------------------------------------------------
# The temperature clamp
# ---------------------------------------------------------------------------------------------------

@operation(
    DOC,
    latex=r"t \leftarrow \min(\max(t, 0), \ln 100),\quad s = e^{t} \in [1, 100]",
    source="CLIP §2.5; open_clip task/image_text_task.py clamp_logit_scale, legacy_train.py L200",
    returns="logit_scale",
    summary="The clamp applied to the stored log-temperature after every optimiser step: t in [0, ln 100], so the "
            "logit scale exp(t) never exceeds 100. Tensor in, tensor of the same shape and dtype out.",
    outputs=(Output("logit_scale", shape="logit_scale.shape", dtype="logit_scale"),),
)
def clamp_logit_scale(logit_scale: torch.Tensor) -> torch.Tensor:
    check_tensor("logit_scale", logit_scale)
    return logit_scale.to(F64).clamp(0.0, MAX_LOGIT_SCALE).to(logit_scale.dtype)


# ---------------------------------------------------------------------------------------------------
# Data parallel: the local loss of one rank and the sharded loss of W ranks
# ---------------------------------------------------------------------------------------------------

@operation(
    DOC,
    latex=r"L_r = \tfrac12\big[\mathrm{CE}(e^t\hat I_r\hat T^\top, y_r) + "
          r"\mathrm{CE}(e^t\hat T_r\hat I^\top, y_r)\big],\quad y_r = \mathrm{arange}(b) + b\,r",
    source="open_clip loss.py ClipLoss.get_logits (local_loss=True) and get_ground_truth (labels + num_logits*rank)",
    returns="loss",
    summary="The local loss of rank `rank` of `world_size` ranks over the concatenated batch (N = W b pairs, "
            "rank r holds rows b r .. b (r+1) - 1): its b local images against all N texts and its b local texts "
            "against all N images, labels offset by b r.",
    baseline="torch.eager",
    outputs=(Output("loss", shape=ONE_ELEMENT, dtype="image_features"),),
    capabilities=("grad",),
)
def local_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale, *, rank: int,
               world_size: int) -> torch.Tensor:
    N, _ = check_pair(image_features, text_features)
    W = check_world(N, world_size)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < W:
        raise ArgumentError("rank", f"rank must be an integer in [0, world_size) = [0, {W}), got {rank!r}")
    t = check_scalar("logit_scale", logit_scale)
    I_hat, T_hat = normalize(image_features.to(F64)), normalize(text_features.to(F64))
    b = N // W
    rows = slice(b * rank, b * (rank + 1))
    y = torch.arange(b, device=image_features.device) + b * rank
    loss = 0.5 * (cross_entropy(logits(I_hat[rows], T_hat, t), y) + cross_entropy(logits(T_hat[rows], I_hat, t), y))
    return loss.to(image_features.dtype)


def grads_of_ranks(rank_losses, leaves, world_size: int):
    """What data-parallel training sees: each rank's backward of its own loss accumulates, through the collectives'
    backward, the gradient of sum_r L_r into the local features; DDP then averages over the W ranks."""
    total = torch.stack(rank_losses).sum()
    return tuple(g / world_size for g in torch.autograd.grad(total, leaves))


@operation(
    DOC,
    latex=r"\big(L_r\big)_{r<W},\quad \frac1W\,\frac{\partial}{\partial I_r}\sum_{r'} L_{r'},\ "
          r"\frac1W\,\frac{\partial}{\partial T_r}\sum_{r'} L_{r'}",
    source="open_clip loss.py (local_loss=True, gather_with_grad=True); open_clip #894 (maintainer: global loss = "
           "mean of the local losses)",
    returns="(losses, d_image, d_text)",
    summary="CLIP trained data-parallel on world_size ranks, each holding N / W consecutive pairs: the loss each "
            "rank reports (W,) and the gradients its local features receive (backward of its own loss through the "
            "all-gather, divided by W as DDP averages), laid out as the concatenated batch (N, D).",
    dtypes=("float64", "float32"),
    outputs=(
        Output("losses", shape="(world_size,)"),
        Output("d_image", shape="image_features.shape"),
        Output("d_text", shape="text_features.shape"),
    ),
    capabilities=("grad", "full_world_only"),
)
def sharded_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale, *, world_size: int):
    N, _ = check_pair(image_features, text_features)
    W = check_world(N, world_size)
    leaves = [x.detach().to(F64).requires_grad_(True) for x in (image_features, text_features)]
    with torch.enable_grad():
        losses = [local_loss(*leaves, logit_scale, rank=r, world_size=W) for r in range(W)]
        d_image, d_text = grads_of_ranks(losses, leaves, W)
    dt = image_features.dtype
    return torch.stack(losses).detach().to(dt), d_image.to(dt), d_text.to(dt)


# ---------------------------------------------------------------------------------------------------
# Zero-shot classification
# ---------------------------------------------------------------------------------------------------

@operation(
    DOC,
    latex=r"w_c = \mathrm{normalize}\Big(\frac1{|T|}\sum_{k}\mathrm{normalize}(e_{c,k})\Big),\quad W=[w_1\cdots w_C]",
    source="open_clip zero_shot_classifier.py L62-64; CLIP §3.1.4 (prompt ensembling over 80 templates)",
    returns="W",
    summary="The zero-shot classifier from text embeddings of C classes x K templates (C, K, D): each template "
            "embedding normalised, averaged over templates, renormalised; the columns of W (D, C). "
            "Logits are 100 x normalize(image) @ W.",
    outputs=(Output("W", shape="(class_embeddings.shape[2], class_embeddings.shape[0])"),),
)
def zero_shot_classifier(class_embeddings: torch.Tensor) -> torch.Tensor:
    check_tensor("class_embeddings", class_embeddings, rank=3)
    e = class_embeddings.to(F64)
    return normalize(normalize(e).mean(dim=1)).T.to(class_embeddings.dtype)


@spec(DOC, latex=r"\mathrm{logits} = 100\cdot\hat I\,W",
      source="open_clip_train/zero_shot.py L105 (fixed 100, not the learned scale; argmax unaffected)")
def zero_shot_logits(image_features: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return 100.0 * normalize(image_features) @ W


# ---------------------------------------------------------------------------------------------------
# Claims (catalogue/clip.md, "Checkable properties" and "Known answers")
# ---------------------------------------------------------------------------------------------------

LOSS, CE, LOCAL, SHARDED = f"{DOC}.clip_loss", f"{DOC}.contrastive_loss", f"{DOC}.local_loss", f"{DOC}.sharded_loss"

claim(DOC, "loss_within_budget", kind="budget", operations=(LOSS,),
      statement="The loss and its gradients with respect to both feature sets are within the error budget of the "
                "float64 spec (2x / 3x the naive same-precision baseline's error + floor); a library's model "
                "(transformers' CLIPModel with return_loss=True) gives the spec's loss on its own embeddings.",
      source="CLIP Fig. 3; design.md (error budgets)")
claim(DOC, "invariances", kind="identity", operations=(LOSS,),
      statement="The loss is invariant to the norms of the features (normalised inside) and to a common orthogonal "
                "rotation of both embedding sets (float64: within the rounding of the N x N dot products).",
      source="catalogue/clip.md property 1")
claim(DOC, "swap_symmetry", kind="identity", operations=(LOSS,),
      statement="Swapping the image and text inputs leaves the loss unchanged (float64 reassociation only).",
      source="catalogue/clip.md property 2")
claim(DOC, "joint_permutation", kind="identity", operations=(LOSS,),
      statement="Permuting the pairs (the same permutation of images and texts) leaves the loss unchanged.",
      source="catalogue/clip.md property 6")
claim(DOC, "closed_forms", kind="identity", operations=(LOSS,),
      statement="All-identical features give ln N; orthonormal pairs (N <= D) give ln(1 + (N - 1) e^{-s}), "
                "s = exp(logit_scale) (float64, within the rounding of the logits: the loss cancels s against the "
                "log-sum-exp).",
      source="catalogue/clip.md properties 3-4")
claim(DOC, "logits_gradient", kind="identity", operations=(CE,),
      statement="The gradient of the symmetric loss with respect to the logits is ((softmax_row(L) - I) + "
                "(softmax_col(L) - I)) / (2N): the image->text part has zero row sums, the text->image part zero "
                "column sums (float64, autograd of the implementation against the formula).",
      source="catalogue/clip.md property 5")
claim(DOC, "local_loss_sharding", kind="identity", operations=(LOCAL,),
      statement="Over W simulated ranks the mean of the local losses equals the global loss, and the summed "
                "gradients of the local losses, divided by W, equal the global loss's gradients (float64).",
      source="catalogue/clip.md property 7; open_clip #894")
claim(DOC, "distributed_equals_single", kind="identity", operations=(SHARDED,),
      statement="Data-parallel CLIP on W ranks (all-gather with gradient, local loss, labels offset by b r): the "
                "mean of the ranks' losses is the single-process loss on the concatenated batch, and the ranks' "
                "feature gradients (averaged over ranks as DDP does) are its gradients; float64 within the rounding "
                "of the terms summed, float32 within the budget of the float64 reference.",
      source="catalogue/clip.md (distributed; open_clip #616, #894); design.md (Distributed)")
claim(DOC, "zero_shot_classifier", kind="identity", operations=(f"{DOC}.zero_shot_classifier",),
      statement="The zero-shot classifier's columns have unit norm, are invariant to the order of the templates "
                "and to each template embedding's norm, and equal the normalised mean of the normalised templates.",
      source="catalogue/clip.md property 8; open_clip zero_shot_classifier.py")
claim(DOC, "logit_scale_clamp", kind="exact", operations=(f"{DOC}.clamp_logit_scale",),
      statement="After the clamp, exp(logit_scale) lies in [1, 100]; values already in [0, ln 100] are unchanged.",
      source="CLIP §2.5; catalogue/clip.md property 8")
claim(DOC, "known_answers", kind="known-answer", operations=(LOSS,),
      statement="The catalogue's vectors: N = 4 orthonormal pairs at s = 1/0.07 give 1.874623e-6; all-equal "
                "features give ln 4; the 3-pair example at s = 10 gives 4.650514.",
      source="catalogue/clip.md, known answers")
claim(DOC, "contract", kind="contract", operations=(LOSS, LOCAL, SHARDED),
      statement="Malformed input (feature shapes that differ, a rank other than 2, integer features, a non-finite "
                "or non-scalar logit_scale, a world size that does not divide N) is rejected with an error naming "
                "the argument.",
      source="design.md (bad input)")


# ---------------------------------------------------------------------------------------------------
# Domains: every argument over its whole range (eqspec/domain.py); the differential tests draw from them
# ---------------------------------------------------------------------------------------------------

from eqspec.domain import Built, Choice, Domain, Int, Real, resolve  # noqa: E402
from eqspec.registry import REGISTRY  # noqa: E402

# The stored log-temperature t over its whole range: below the clamp (scale < 1), its ends 0 and ln 100, CLIP's
# initial ln(1 / 0.07), and beyond the clamp (exp(12) = 1.6e5: near one-hot rows)
# (the first edge and option of each is what hypothesis draws first: a generic point, the boundaries follow)
LOG_SCALE = Real(-10.0, 12.0, edges=(INIT_LOGIT_SCALE, 0.0, MAX_LOGIT_SCALE, -3.0, 8.0, 12.0))
SCALE_FORMS = Choice(("0-d tensor", "number", "(1,) tensor"))


def _logit_scale(gen, case):
    """The drawn t as a Python number or a one-element tensor (which then carries a gradient)."""
    t, form = case["t"], case["t_form"]
    if form == "number":
        return float(t)
    return torch.tensor(t, dtype=F64) if form == "0-d tensor" else torch.tensor([t], dtype=F64)


def _rows(gen, n: int, D: int, spread: float) -> torch.Tensor:
    """n Gaussian rows of norms 10^U(-spread, spread); sometimes with repeated rows (ties)."""
    x = torch.randn(n, D, generator=gen, dtype=F64)
    x = x * 10 ** (spread * (2 * torch.rand(n, 1, generator=gen, dtype=F64) - 1))
    if n > 1 and int(torch.randint(0, 3, (), generator=gen)) == 0:
        x[torch.randint(0, n, (n,), generator=gen) < n // 2 + 1] = x[0].clone()
    return x


def _image_features(rows: str):
    def build(gen, case):
        return _rows(gen, resolve(rows, case), case["D"], case["norm_spread"])
    return Built(build, note=f"image features ({rows}, D)")


def _text_features(gen, case):
    """Independent of the images, aligned with them (the image plus noise: the trained regime, a small loss), or
    the images themselves rescaled (every pair identical up to its norm)."""
    image = case["image_features"]
    n, D = image.shape
    kind = int(torch.randint(0, 3, (), generator=gen))
    if kind == 0:
        return _rows(gen, n, D, case["norm_spread"])
    scale = 10 ** (2 * torch.rand(n, 1, generator=gen, dtype=F64) - 1)
    if kind == 1:
        noise = torch.randn(n, D, generator=gen, dtype=F64) * image.norm(dim=1, keepdim=True) / math.sqrt(D)
        return (image + float(torch.rand((), generator=gen)) * noise) * scale
    return image * scale


FEATURES = dict(D=Int(1, 16, edges=(4, 1, 2)), norm_spread=Real(0.0, 6.0, edges=(1.0, 0.0)), t=LOG_SCALE,
                t_form=SCALE_FORMS)


def _logit_matrix(gen, case):
    """(N, N) logits of spread ``scale``: random, diagonal-dominant (a trained model), constant (every pair tied)
    or with repeated rows and columns."""
    N, scale = case["N"], case["scale"]
    L = torch.randn(N, N, generator=gen, dtype=F64)
    kind = int(torch.randint(0, 4, (), generator=gen))
    if kind == 1:
        L = L + 3 * torch.eye(N, dtype=F64)
    elif kind == 2:
        L = torch.full_like(L, float(L[0, 0]))
    elif kind == 3 and N > 1:
        L[N // 2:] = L[0]
        L[:, N // 2:] = L[:, :1]
    return L * scale


def _log_scales(gen, case):
    """Values of the stored log-temperature inside, at the ends of and beyond the clamp, the drawn t first."""
    shape = {"0-d": (), "vector": (case["n"],), "matrix": (2, case["n"])}[case["shape"]]
    edges = torch.tensor([0.0, MAX_LOGIT_SCALE, -1e-12, MAX_LOGIT_SCALE + 1e-12, MAX_LOGIT_SCALE - 1e-12,
                          INIT_LOGIT_SCALE, -50.0, 50.0], dtype=F64)
    x = 60 * torch.rand(shape, generator=gen, dtype=F64) - 30
    pick = torch.randint(0, 2 * len(edges), shape, generator=gen)
    x = torch.where(pick < len(edges), edges[pick.clamp(max=len(edges) - 1)], x)
    x.view(-1)[0] = case["t"]
    return x


def _class_embeddings(gen, case):
    """(C, K, D) template embeddings of norms spread over decades; sometimes a template repeated (ties)."""
    C, K, D = case["C"], case["K"], case["D"]
    e = torch.randn(C, K, D, generator=gen, dtype=F64)
    e = e * 10 ** (case["norm_spread"] * (2 * torch.rand(C, K, 1, generator=gen, dtype=F64) - 1))
    if K > 1 and int(torch.randint(0, 3, (), generator=gen)) == 0:
        e[:, 1:] = e[:, :1] * 10 ** torch.rand(C, K - 1, 1, generator=gen, dtype=F64)
    return e


REGISTRY.attach_domain(CE, Domain(
    sizes=dict(N=Int(1, 8, edges=(3, 1, 2)), scale=Real(1e-3, 1e4, edges=(10.0, 1.0, 100.0), log=True)),
    args=dict(L=Built(_logit_matrix, note="(N, N) logits")),
    large=dict(N=1024),
))
REGISTRY.attach_domain(LOSS, Domain(
    sizes=dict(N=Int(1, 8, edges=(3, 1, 2)), **FEATURES),
    args=dict(image_features=_image_features("N"), text_features=Built(_text_features, note="text features"),
              logit_scale=Built(_logit_scale, note="t: a number or a one-element tensor")),
    large=dict(N=1024, D=64),
))
REGISTRY.attach_domain(f"{DOC}.clamp_logit_scale", Domain(
    sizes=dict(t=Real(-50.0, 50.0, edges=(10.0, MAX_LOGIT_SCALE, 0.0, INIT_LOGIT_SCALE, -1.0)),
               shape=Choice(("vector", "0-d", "matrix")), n=Int(1, 6, edges=(4, 1))),
    args=dict(logit_scale=Built(_log_scales, note="log-temperatures in, at and beyond [0, ln 100]")),
))
REGISTRY.attach_domain(LOCAL, Domain(
    sizes=dict(b=Int(1, 3, edges=(2, 1)), **FEATURES),
    args=dict(world_size=Int(1, 4, edges=(2, 1, 4)), rank=Int(0, "world_size - 1", edges=(1, 0, 2, 3)),
              image_features=_image_features("world_size * b"),
              text_features=Built(_text_features, note="text features"),
              logit_scale=Built(_logit_scale, note="t: a number or a one-element tensor")),
    large=dict(b=256, D=64),
))
REGISTRY.attach_domain(SHARDED, Domain(
    sizes=dict(b=Int(1, 3, edges=(2, 1)), **FEATURES),
    args=dict(world_size=Int(1, 4, edges=(2, 1, 4)), image_features=_image_features("world_size * b"),
              text_features=Built(_text_features, note="text features"),
              logit_scale=Built(_logit_scale, note="t: a number or a one-element tensor")),
))
REGISTRY.attach_domain(f"{DOC}.zero_shot_classifier", Domain(
    sizes=dict(C=Int(1, 6, edges=(3, 1)), K=Int(1, 8, edges=(3, 1)), D=Int(2, 16, edges=(4, 2)),
               norm_spread=Real(0.0, 6.0, edges=(1.0, 0.0))),
    args=dict(class_embeddings=Built(_class_embeddings, note="(C, K, D) template embeddings")),
    large=dict(C=200, K=80, D=64),
))
