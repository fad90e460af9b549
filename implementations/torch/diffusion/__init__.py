"""torch implementations of the diffusion documents (edm, score_sde): batched, any device, in the input's dtype.

Each is the obvious torch code of its equation with no float64 detour, so it also serves as the naive
same-precision baseline of the error budget (``torch.batched``).
"""

from eqspec.registry import REGISTRY, Implementation

_M = "implementations.torch.diffusion"

for _op, _module, _fn, _notes in (
    ("edm.to_denoised", "edm", "to_denoised", "A.6 conversions in the input dtype"),
    ("edm.ode_derivative", "edm", "ode_derivative", "probability-flow ODE direction in the input dtype"),
    ("edm.euler_step", "edm", "euler_step", "Euler step in sigma (the baseline)"),
    ("edm.ddim_step", "edm", "ddim_step", "DDIM step (the baseline)"),
    ("edm.ddpm_step", "edm", "ddpm_step", "DDPM ancestral step (the baseline)"),
    ("edm.flow_euler_step", "edm", "flow_euler_step", "rectified-flow Euler step (the baseline)"),
    ("edm.heun_sampler", "edm", "heun_sampler", "Algorithm 1, the whole batch at once, in the input dtype"),
    ("edm.stochastic_sampler", "edm", "stochastic_sampler", "Algorithm 2, the whole batch at once"),
    ("score_sde.predictor_step", "score_sde", "predictor_step", "EM / reverse-diffusion / ancestral (the baseline)"),
    ("score_sde.langevin_step", "score_sde", "langevin_step", "Langevin corrector (the baseline)"),
    ("score_sde.pc_sampler", "score_sde", "pc_sampler", "predictor-corrector sampler, the whole batch at once"),
):
    # every kind and prediction target the spec has (the families of its capabilities)
    _options = frozenset(c for c in REGISTRY.operations[_op].capabilities if ":" in c)
    REGISTRY.add_implementation(Implementation(_op, "torch.batched", f"{_M}.{_module}:{_fn}", "torch",
                                               dtypes=("float64", "float32"), provides=_options, notes=_notes))
