"""transformers' CLIPModel and SiglipModel as implementations of clip.clip_loss and siglip.sigmoid_loss.

The loss is computed by the model's own forward (normalisation, logits, loss, all of it transformers' code): the
towers are replaced by pass-through modules whose pooled output is the given features, and the projections by the
identity, so that features chosen by a property test reach the library's loss unchanged. ``*_model_outputs`` run
the untouched models, tiny random configurations, with ``return_loss=True``.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
from torch import nn

TINY_TEXT = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                 max_position_embeddings=16, pad_token_id=0, bos_token_id=1, eos_token_id=2)
TINY_VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=8,
                   patch_size=4, num_channels=3)


def available() -> bool:
    return importlib.util.find_spec("transformers") is not None


class PassThrough(nn.Module):
    """A tower whose pooled output is its input: pixel_values (or input_ids) are already the features."""

    def forward(self, pixel_values=None, input_ids=None, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        x = pixel_values if pixel_values is not None else input_ids
        return BaseModelOutputWithPooling(last_hidden_state=x[:, None], pooler_output=x)


def _configs(name: str):
    from transformers import CLIPConfig, SiglipConfig

    if name == "clip":
        return CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION, projection_dim=16)
    return SiglipConfig(text_config=TINY_TEXT, vision_config=TINY_VISION)


@functools.cache
def model(name: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    from transformers import CLIPModel, SiglipModel

    torch.manual_seed(seed)
    m = (CLIPModel if name == "clip" else SiglipModel)(_configs(name))
    return m.to(dtype).eval()


@functools.cache
def _passthrough(name: str, dtype: torch.dtype):
    from transformers import CLIPModel, SiglipModel

    m = (CLIPModel if name == "clip" else SiglipModel)(_configs(name)).to(dtype).eval()
    m.vision_model, m.text_model = PassThrough(), PassThrough()
    if name == "clip":
        m.visual_projection, m.text_projection = nn.Identity(), nn.Identity()
    for scalar in ("logit_scale", "logit_bias"):  # plain attributes from now on: the caller's tensors, in the graph
        m._parameters.pop(scalar, None)
    return m


def _as_tensor(value, like: torch.Tensor) -> torch.Tensor:
    """The number or one-element tensor, in the features' dtype, as the model's logit_scale / logit_bias would be."""
    if isinstance(value, torch.Tensor):
        return value.reshape(()).to(like.dtype)
    return torch.tensor(value, dtype=like.dtype)


def _set(param: nn.Parameter, value) -> None:
    with torch.no_grad():
        param.fill_(float(value))


def clip_loss(image_features, text_features, logit_scale):
    m = _passthrough("clip", image_features.dtype)
    m.logit_scale = _as_tensor(logit_scale, image_features)
    return m(input_ids=text_features, pixel_values=image_features, return_loss=True).loss


def sigmoid_loss(image_features, text_features, t_prime, bias):
    m = _passthrough("siglip", image_features.dtype)
    m.logit_scale, m.logit_bias = _as_tensor(t_prime, image_features), _as_tensor(bias, image_features)
    return m(input_ids=text_features, pixel_values=image_features, return_loss=True).loss


def siglip_initial_parameters():
    """The stored logit_scale (t') and logit_bias (b) of a freshly built SiglipModel."""
    m = model("siglip", torch.float32, seed=4012)
    return float(m.logit_scale.detach()), float(m.logit_bias.detach())


def _inputs(seed: int, batch: int = 4, length: int = 7):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, TINY_TEXT["vocab_size"], (batch, length), generator=g)
    pixels = torch.randn(batch, 3, TINY_VISION["image_size"], TINY_VISION["image_size"], generator=g)
    return ids, pixels


def clip_model_outputs(seed: int):
    """CLIPModel(return_loss=True) on random pixels and token ids; returns the output and the stored t."""
    m = model("clip", torch.float32, seed)
    ids, pixels = _inputs(seed)
    with torch.no_grad():
        return m(input_ids=ids, pixel_values=pixels, return_loss=True), m.logit_scale.item()


def siglip_model_outputs(seed: int, t_prime: float | None = None, bias: float | None = None):
    """SiglipModel(return_loss=True); t' and b set first when given (its own init is 0 and 0)."""
    m = model("siglip", torch.float32, seed)
    if t_prime is not None:
        _set(m.logit_scale, t_prime)
        _set(m.logit_bias, bias)
    ids, pixels = _inputs(seed)
    with torch.no_grad():
        return m(input_ids=ids, pixel_values=pixels, return_loss=True), m.logit_scale.item(), m.logit_bias.item()
