"""k-diffusion 0.1.1.post1 (k_diffusion/sampling.py) as implementations of the EDM operations it has: the Karras
schedule, the Euler and Heun samplers (Karras et al. 2022, Algorithms 1-2), and the ancestral split.

``import k_diffusion`` imports its utils.py, which needs torchvision (never installed here: it does not import
beside the CPU torch). sampling.py needs from utils only ``append_dims``; so sampling.py is loaded by file location
into a private package whose ``utils`` is a shim with k-diffusion's own append_dims (copied below, 4 lines). Its
other imports (scipy.integrate, torchdiffeq, torchsde, tqdm) are installed with --no-deps.

k-diffusion has only the EDM schedule (sigma(t) = t, s(t) = 1): these implementations cover kind 'edm' only and
raise NotImplementedError for the others (the suite does not ask: they provide only "kind:edm").
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path

import torch

from specs.edm import EDM_RHO, EDM_SIGMA_MAX, EDM_SIGMA_MIN

_PACKAGE = "_eqspec_k_diffusion"  # a private name: a real ``import k_diffusion`` elsewhere is not shadowed


def _append_dims(x, target_dims):
    """k_diffusion/utils.py append_dims (0.1.1.post1), verbatim."""
    dims_to_append = target_dims - x.ndim
    if dims_to_append < 0:
        raise ValueError(f'input has {x.ndim} dims but target_dims is {target_dims}, which is less')
    return x[(...,) + (None,) * dims_to_append]


@functools.cache
def sampling():
    """k_diffusion/sampling.py, loaded by file location (without the package's __init__ and utils.py)."""
    found = importlib.util.find_spec("k_diffusion")  # finds the package without importing it
    path = Path(found.submodule_search_locations[0]) / "sampling.py"
    package = types.ModuleType(_PACKAGE)
    package.__path__ = []
    utils = types.ModuleType(f"{_PACKAGE}.utils")
    utils.append_dims = _append_dims
    package.utils = utils
    sys.modules.setdefault(_PACKAGE, package)
    sys.modules.setdefault(f"{_PACKAGE}.utils", utils)
    spec = importlib.util.spec_from_file_location(f"{_PACKAGE}.sampling", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _edm_only(kind: str) -> None:
    if kind != "edm":
        raise NotImplementedError(f"k-diffusion has only the EDM schedule (sigma = t, s = 1), not kind={kind!r}")


def karras_time_steps(N: int, *, kind: str = "edm", sigma_min: float | None = None, sigma_max: float | None = None,
                      rho: float = EDM_RHO, epsilon_s: float = 1e-3, dtype: torch.dtype = torch.float64):
    """edm.time_steps: get_sigmas_karras(N, sigma_min, sigma_max, rho) - N noise levels from sigma_max down to
    sigma_min (torch.linspace(0, 1, N), in torch's default dtype, float32) and an appended 0: the spec's N + 1
    values. sigma_min / sigma_max default to EDM's 0.002 / 80 (k-diffusion has no defaults)."""
    _edm_only(kind)
    lo = EDM_SIGMA_MIN if sigma_min is None else sigma_min
    hi = EDM_SIGMA_MAX if sigma_max is None else sigma_max
    return sampling().get_sigmas_karras(N, lo, hi, rho).to(dtype)


def _model(denoiser):
    """k-diffusion calls model(x, sigma * x.new_ones([batch])); the operation's denoiser takes a float sigma."""
    def model(x, sigma):
        return denoiser(x, float(sigma.reshape(-1)[0]))
    return model


def heun_sampler(denoiser, x_T, t_steps, *, kind: str = "edm", second_order: bool = True):
    """edm.heun_sampler: sample_heun for second_order=True (Heun; Euler for the step to sigma = 0), sample_euler for
    second_order=False, both with s_churn = 0 (Algorithm 1). The noise levels are handed over in x_T's dtype, as
    k-diffusion's own schedules come (a float64 sigma would promote a float32 x to float64 in its to_d)."""
    _edm_only(kind)
    sampler = sampling().sample_heun if second_order else sampling().sample_euler
    return sampler(_model(denoiser), x_T, t_steps.to(x_T.dtype), disable=True)


def ancestral_split(sigma_from, sigma_to, *, eta: float = 1.0):
    """edm.ancestral_split: get_ancestral_step, which takes one pair of noise levels (it uses Python's min), applied
    to each pair of 0-d tensors in the inputs' dtype; eta = 0 returns (sigma_to, 0.)."""
    get = sampling().get_ancestral_step
    if sigma_from.shape != sigma_to.shape:  # no pairs to make: k-diffusion's own answer to the whole tensors
        return get(sigma_from, sigma_to, eta=eta)
    downs, ups = [], []
    for f, t in zip(sigma_from.reshape(-1), sigma_to.reshape(-1)):
        down, up = get(f, t, eta=eta)
        downs.append(torch.as_tensor(down, dtype=sigma_to.dtype))
        ups.append(torch.as_tensor(up, dtype=sigma_to.dtype))
    shape = sigma_to.shape
    empty = torch.empty(0, dtype=sigma_to.dtype)
    return ((torch.stack(downs) if downs else empty).reshape(shape),
            (torch.stack(ups) if ups else empty).reshape(shape))
