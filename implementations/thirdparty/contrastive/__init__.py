"""Adapters to the contrastive losses of libraries nobody here wrote: transformers' CLIPModel and SiglipModel, and
open_clip's ClipLoss and SigLipLoss (single process and data parallel on gloo).

Their documented deviations are findings measured by the property tests (transformers 5.24, open_clip 3.3.0,
torch 2.13, CPU): each is expected to fail its claim, and the report shows it with the reason below.
"""

from eqspec.registry import REGISTRY, Deviation, Implementation

_M = "implementations.thirdparty.contrastive"
_HF, _OC = f"{_M}.transformers_models", f"{_M}.open_clip_loss"
_DT = ("float64", "float32")
_GRAD = frozenset({"grad"})
_HF_SIGLIP_INIT = Deviation(
    "transformers' SiglipModel initialises logit_scale = 0 and logit_bias = 0 (measured on a fresh tiny "
    "SiglipModel: t' = 0.0, b = 0.0, so t = 1), not the paper's t' = ln 10 = 2.302585 and b = -10")
_NAN_SCALE = Deviation(
    "no check of the logit scale: a NaN logit_scale gives a NaN loss without an error (measured: nan on 4 pairs, "
    "D = 3); the spec rejects it", only=(("case", ("NaN logit_scale",)),))
_HF_INF_SCALE = Deviation(
    "SiglipModel's loss takes t' = inf without an error and returns inf (measured on 4 pairs, D = 3)",
    only=(("case", ("infinite t_prime",)),))
_OC_SIGLIP_ACCEPTS = Deviation(
    "SigLipLoss checks neither t' nor the features' rank: t' = inf returns nan, and 1-D features (4,) return a "
    "number (measured: 14.5245) because x @ y.T is then one dot product broadcast over the 4 x 4 labels",
    only=(("case", ("infinite t_prime", "image features of rank 1")),))

_OC_VISITS = Deviation(
    "which rank's text block each rank received is read from the blocks' contents (open_clip does not report it): "
    "where two ranks hold identical normalised text blocks (D = 1, duplicated texts) the visits cannot be told "
    "apart and may differ from the spec's", strict=False)

for _impl in (
    Implementation("clip.contrastive_loss", "thirdparty.transformers", "transformers.models.clip.modeling_clip:"
                   "image_text_contrastive_loss", "thirdparty", dtypes=_DT, modules=("transformers",),
                   provides=_GRAD, notes="transformers' image_text_contrastive_loss (mean of the two CEs)"),
    Implementation("clip.clip_loss", "thirdparty.transformers", f"{_HF}:clip_loss", "thirdparty", dtypes=_DT,
                   modules=("transformers",), provides=_GRAD,
                   deviations={"clip.contract": _NAN_SCALE},
                   notes="CLIPModel.forward(return_loss=True) with pass-through towers and identity projections"),
    Implementation("clip.clip_loss", "thirdparty.open_clip", f"{_OC}:clip_loss", "thirdparty", dtypes=_DT,
                   modules=("open_clip",), provides=_GRAD,
                   deviations={"clip.contract": _NAN_SCALE},
                   notes="open_clip loss.py ClipLoss on F.normalize'd features with exp(t)"),
    Implementation("clip.sharded_loss", "thirdparty.open_clip_gloo", f"{_OC}:clip_sharded_loss", "thirdparty",
                   devices=("cpu",), dtypes=_DT, modules=("open_clip",), provides=_GRAD | {"full_world_only"},
                   limits={"world_size": (4, 4)},
                   notes="ClipLoss(local_loss=True, gather_with_grad=True) on 4 gloo ranks"),
    Implementation("siglip.sigmoid_loss", "thirdparty.transformers", f"{_HF}:sigmoid_loss", "thirdparty",
                   dtypes=_DT, modules=("transformers",), provides=_GRAD,
                   deviations={"siglip.contract": _HF_INF_SCALE},
                   notes="SiglipModel.forward(return_loss=True) with pass-through towers"),
    Implementation("siglip.sigmoid_loss", "thirdparty.open_clip", f"{_OC}:sigmoid_loss", "thirdparty", dtypes=_DT,
                   modules=("open_clip",), provides=_GRAD,
                   deviations={"siglip.contract": _OC_SIGLIP_ACCEPTS},
                   notes="open_clip loss.py SigLipLoss on F.normalize'd features with exp(t'), b"),
    Implementation("siglip.sharded_loss", "thirdparty.open_clip_gloo", f"{_OC}:siglip_sharded_loss", "thirdparty",
                   devices=("cpu",), dtypes=_DT, modules=("open_clip",), provides=_GRAD,
                   limits={"world_size": (2, 4)}, deviations={"siglip.operations_match_spec": _OC_VISITS},
                   notes="SigLipLoss(rank, world_size, dist_impl) on 2-4 gloo ranks (bidir and shift)"),
    Implementation("siglip.initial_parameters", "thirdparty.transformers", f"{_HF}:siglip_initial_parameters",
                   "thirdparty", modules=("transformers",),
                   deviations={"siglip.initialisation": _HF_SIGLIP_INIT,
                               "siglip.operations_match_spec": _HF_SIGLIP_INIT},
                   notes="logit_scale and logit_bias of a freshly built tiny SiglipModel"),
):
    REGISTRY.add_implementation(_impl)
