"""diffusers' schedulers (DDPM, DDIM, EulerDiscrete, EDMEuler, FlowMatchEulerDiscrete) as implementations of the
step and schedule operations of the EDM document, driven offline with no model; and k-diffusion's Karras schedule,
Euler/Heun samplers and ancestral split (k_diffusion/sampling.py loaded by file location, without torchvision).

Their documented deviations are measured findings (diffusers 0.42.1, CPU): each is expected to fail its claim, and
the report shows it with the reason below. The schedulers step in float32 (they upcast the sample), so they are
checked in float32.
"""

from eqspec.registry import REGISTRY, Deviation, Implementation

_M = "implementations.thirdparty.diffusion.diffusers_schedulers"
_F32 = ("float32",)

_DDIM_STRIDE = Deviation(
    "DDIMScheduler.step goes to t - T // N, not to the next listed timestep: with 'linspace' spacing (T = 1000, "
    "N = 10) the list strides 111 (999, 888, ...) while step goes 999 -> 899; with 'trailing' and N not dividing T it "
    "is off by one (N = 7: listed 999, 856, ..., 142; step goes 999 -> 857, ..., and 142 -> 0 instead of to "
    "alpha_bar = 1). Measured by reading alpha_bar_prev off the step "
    "(diffusers issues #12633, #11347; DDPM was fixed by PR #9384)",
    only=(("spacing", ("linspace", "trailing")),))
_EDM_EPSILON = Deviation(
    "EDMEulerScheduler's prediction_type 'epsilon' is EDM's raw network output F: precondition_outputs returns "
    "c_skip y + c_out F with c_out = +sigma sigma_d / sqrt(sigma^2 + sigma_d^2), not y - sigma eps (measured: at "
    "sigma = 1, eps = 1, y = 0 it returns 0.447 where a noise prediction gives -1)",
    only=(("prediction", ("epsilon",)),))
_EDM_INIT = Deviation(
    "EDMEulerScheduler.init_noise_sigma is sqrt(sigma_max^2 + 1) = 80.00625 for sigma_max = 80, where EDM's "
    "Algorithm 1 starts from sigma_max = 80 (relative excess 7.8e-5)")
_DDIM_CLIP = Deviation(
    "DDIMScheduler's default clip_sample=True clamps x0_hat to [-1, 1], so a DDIM step is no longer an EDM Euler "
    "step whenever |x0_hat| > 1 (measured: max difference 8.6 on 10^4 samples x ~ N(0, 4), eps_hat = tanh x, "
    "alpha_bar 0.5 -> 0.9)")

# The differential test (test_matches_spec.py) draws the whole domain, its options pinned one at a time in float64
_STRIDE_DIFFERENTIAL = Deviation(
    _DDIM_STRIDE.reason + "; and with 'trailing' its list can have N + 1 entries ending in -1, as DDPM's (below). "
    "Measured on the whole domain: T = 3, N = 2 'linspace' steps 2 -> 1 where the list goes to 0; 'trailing' steps "
    "1 -> 0 where the spec goes to -1 (alpha_bar = 1); about half the drawn (T, N) show it",
    only=(("pin", (("spacing", "linspace"), ("spacing", "trailing"))),), strict=False)
_TRAILING_EXTRA = Deviation(
    "DDPMScheduler's 'trailing' spacing is np.round(np.arange(T, 0, -T / N)) - 1, and the float step T / N can leave "
    "room for one more entry: N + 1 timesteps ending in -1 where Lin et al.'s round(T - T / N (0..N-1)) - 1 lists N "
    "(measured: T = 261, N = 55 gives 56, the last -1; T = 771, N = 232 gives 233; 1 in 300 drawn (T, N))",
    only=(("pin", (("spacing", "trailing"),)),), strict=False)
_DDPM_VARIANCE_FLOOR = Deviation(
    "DDPMScheduler._get_variance clamps the posterior variance at 1e-20 before its square root, so a step whose "
    "variance is 0 (alpha_bar_prev = alpha_bar, or alpha_bar_prev = 1) still adds 1e-10 z (measured: x_prev 2.26e-10 "
    "off at 123.211 against 2.5e-12 allowed; float32 rounds it away)", only=(("dtype", ("float64",)),), strict=False)
_CLIP_DIFFERENTIAL = Deviation(
    _DDIM_CLIP.reason + "; on the whole domain x_prev was 582 off at -583.484 (got -1.16), and about 85% of the "
    "drawn steps differ", strict=False)
_EPSILON_DIFFERENTIAL = Deviation(
    _EDM_EPSILON.reason + "; on the whole domain (float32, 'epsilon' and 'v' drawn) denoised was 79.5 off at 78.8649 "
    "(got -0.6189) for 'epsilon', while 'v' agreed", strict=False)
_INIT_DIFFERENTIAL = Deviation(
    _EDM_INIT.reason + "; it is never t0: at t0 = 1 it is 1.41421 where the spec gives 1, at t0 = 0 it is 1")

_TO_D_ACCEPTS = Deviation(
    "the scheduler validates nothing here: a pred of shape (1, 4) broadcasts against x (2, 4), sigma = 0 returns "
    "x / s unchanged, an integer x is accepted, and it has no s to check (the adapter's y = x / s is taken as "
    "VP-scaled for v)", only=(("case", ("shape mismatch", "sigma <= 0", "integer x", "v with an inconsistent s")),))
_STEPS_ACCEPT_N0 = Deviation("EDMEulerScheduler.set_timesteps(0) returns the one-element schedule [0.] instead of "
                             "an error, sigma_min = 1.0 > sigma_max = 0.5 the increasing schedule [0.5, 0.554, ..., "
                             "1.0, 0.] and rho = inf the schedule [1., ..., 1., 0.] (N = 8, measured)",
                             only=(("case", ("N = 0", "sigma_max below sigma_min", "rho infinite")),))
_DDIM_ACCEPTS = Deviation(
    "DDIMScheduler.step accepts alpha_bar = 1.5 (returns NaN from sqrt(1 - alpha_bar)) and, with eta > 0 and no "
    "noise, draws its own (the generator argument): neither is an error",
    only=(("case", ("alpha_bar outside (0, 1)", "eta > 0 without noise")),))

_FLOW_SHIFT_ACCEPTS = Deviation(
    "FlowMatchEulerDiscreteScheduler validates neither its sigmas nor its shift: sigmas (0.2, 1.5, 0.9) with shift "
    "2 return (0.333, 1.2, 0.947), (0.2, -0.5, 0.9) return (0.333, -2, 0.947), and shift = 0 returns all zeros "
    "(measured, float32)", only=(("case", ("one sigma above 1", "one sigma below 0", "shift = 0")),))

_K = "implementations.thirdparty.diffusion.k_diffusion_samplers"
# sampling.py's own imports (k_diffusion itself is never imported: its utils.py needs torchvision)
_K_NEEDS = ("k_diffusion", "scipy", "torchdiffeq", "torchsde", "tqdm")
_EDM = frozenset({"kind:edm"})
_KARRAS_FLOAT32 = Deviation(
    "get_sigmas_karras computes in torch's default dtype, float32 (torch.linspace), whatever dtype is asked, as "
    "max^(1/rho) + ramp (min^(1/rho) - max^(1/rho)): at the last level the sum cancels (measured: N = 2, rho = 1, "
    "sigma 0.002..80: t_1 = 0.0019989 where the spec gives 0.002, relative 5.5e-4), and levels below float32's "
    "range become 0 (measured: N = 1, rho = 0.05, sigma_min = sigma_max = 0.002: t_0 = 0 where the spec gives "
    "0.002, since 0.002^20 underflows float32; sigma_min = sigma_max = 1e-150 likewise); whether a drawn case "
    "shows it depends on its rho, sigmas and the "
    "dtype asked (float32 results round most of it away)", strict=False)
_KARRAS_ACCEPTS_N0 = Deviation("get_sigmas_karras(0, ...) returns the one-element schedule [0.] instead of an error, "
                               "sigma_min = 1.0 > sigma_max = 0.5 the increasing schedule [0.5, 0.554, ..., 1.0, 0.] "
                               "and rho = inf the schedule [1., ..., 1., 0.] (N = 8, measured)",
                               only=(("case", ("N = 0", "sigma_max below sigma_min", "rho infinite")),))
_K_SAMPLER_ACCEPTS = Deviation("sample_heun / sample_euler validate nothing here: increasing noise levels were "
                               "accepted and returned a tensor", only=(("case", ("increasing t_steps",)),))

for _impl in (
    Implementation("edm.time_steps", "thirdparty.k_diffusion", f"{_K}:karras_time_steps", "thirdparty",
                   devices=("cpu",), modules=_K_NEEDS, provides=_EDM,
                   deviations={"edm.time_steps": _KARRAS_FLOAT32, "edm.operations_match_spec": _KARRAS_FLOAT32,
                               "edm.contract": _KARRAS_ACCEPTS_N0},
                   notes="get_sigmas_karras(N, sigma_min, sigma_max, rho) (N levels and an appended 0)"),
    Implementation("edm.heun_sampler", "thirdparty.k_diffusion", f"{_K}:heun_sampler", "thirdparty",
                   devices=("cpu",), modules=_K_NEEDS, provides=_EDM,
                   deviations={"edm.contract": _K_SAMPLER_ACCEPTS},
                   notes="sample_heun (second_order=True) / sample_euler (False), s_churn = 0; the noise levels in "
                         "x_T's dtype"),
    Implementation("edm.ancestral_split", "thirdparty.k_diffusion", f"{_K}:ancestral_split", "thirdparty",
                   devices=("cpu",), modules=_K_NEEDS,
                   deviations={"edm.operations_match_spec": Deviation(
                       "get_ancestral_step evaluates sqrt(sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2) in "
                       "the inputs' dtype: in float32 it can be off by more than the floor of one rounding (measured: "
                       "sigma_up 3.03e-8 off at 0.2338, 1.09 float32 eps, against 2.79e-8 allowed where the naive "
                       "float32 code was exact; on more draws than the ci profile's, where sigma_to is near "
                       "sigma_from and the difference of squares cancels: sigma_up 2.61e-8 off at 0.0191112, from "
                       "0.15016 to 0.14892, against 8.95e-9 allowed)", only=(("dtype", ("float32",)),), strict=False)},
                   notes="get_ancestral_step applied to each pair of noise levels (0-d tensors)"),
    Implementation("edm.time_steps", "thirdparty.diffusers_edm_euler", f"{_M}:edm_euler_time_steps", "thirdparty",
                   devices=("cpu",), dtypes=_F32, modules=("diffusers",), provides=frozenset({"kind:edm"}),
                   deviations={"edm.contract": _STEPS_ACCEPT_N0},
                   notes="EDMEulerScheduler.set_timesteps(N).sigmas (rho schedule, computed in float64, "
                         "stored as float32)"),
    Implementation("edm.prior_std", "thirdparty.diffusers_edm_euler", f"{_M}:edm_euler_prior_std", "thirdparty",
                   devices=("cpu",), modules=("diffusers",), provides=frozenset({"kind:edm"}),
                   deviations={"edm.prior_std": _EDM_INIT, "edm.operations_match_spec": _INIT_DIFFERENTIAL},
                   notes="EDMEulerScheduler(sigma_max).init_noise_sigma"),
    Implementation("edm.to_denoised", "thirdparty.diffusers_edm_euler", f"{_M}:edm_euler_to_denoised", "thirdparty",
                   devices=("cpu",), dtypes=_F32, modules=("diffusers",),
                   provides=frozenset({"prediction:epsilon", "prediction:v"}),
                   deviations={"edm.conversions_round_trip": _EDM_EPSILON, "edm.contract": _TO_D_ACCEPTS,
                               "edm.operations_match_spec": _EPSILON_DIFFERENTIAL},
                   notes="EDMEulerScheduler.precondition_outputs ('v' as v_prediction with sigma_data = 1)"),
    Implementation("edm.to_denoised", "thirdparty.diffusers_euler_discrete", f"{_M}:euler_discrete_to_denoised",
                   "thirdparty", devices=("cpu",), dtypes=_F32, modules=("diffusers",),
                   provides=frozenset({"prediction:epsilon", "prediction:v", "prediction:x0"}),
                   deviations={"edm.contract": _TO_D_ACCEPTS},
                   notes="EulerDiscreteScheduler.step(...).pred_original_sample (epsilon, v_prediction, sample)"),
    Implementation("edm.euler_step", "thirdparty.diffusers_edm_euler", f"{_M}:edm_euler_step", "thirdparty",
                   devices=("cpu",), dtypes=_F32, modules=("diffusers",),
                   notes="EDMEulerScheduler.step with pred_original_sample = D"),
    Implementation("edm.euler_step", "thirdparty.diffusers_euler_discrete", f"{_M}:euler_discrete_step",
                   "thirdparty", devices=("cpu",), dtypes=_F32, modules=("diffusers",),
                   notes="EulerDiscreteScheduler(prediction_type='sample').step"),
    Implementation("edm.churn", "thirdparty.diffusers_edm_euler", f"{_M}:edm_euler_churn", "thirdparty",
                   devices=("cpu",), dtypes=_F32, modules=("diffusers",),
                   notes="EDMEulerScheduler.step's churn (s_churn, s_tmin, s_tmax, s_noise): the x_hat and sigma_hat "
                         "step hands to precondition_outputs"),
    Implementation("edm.ddim_step", "thirdparty.diffusers_ddim", f"{_M}:ddim_step", "thirdparty", devices=("cpu",),
                   dtypes=("float64", "float32"), modules=("diffusers",), deviations={"edm.contract": _DDIM_ACCEPTS},
                   notes="DDIMScheduler(clip_sample=False).step with its alpha_bar table set to the inputs"),
    Implementation("edm.ddim_step", "thirdparty.diffusers_ddim_clip_sample", f"{_M}:ddim_step_clipped", "thirdparty",
                   devices=("cpu",), dtypes=("float64",), modules=("diffusers",),
                   deviations={"edm.parameterisations_agree": _DDIM_CLIP, "edm.ddim_ddpm_steps": _DDIM_CLIP,
                               "edm.contract": _DDIM_ACCEPTS, "edm.operations_match_spec": _CLIP_DIFFERENTIAL},
                   notes="DDIMScheduler with its default clip_sample=True"),
    Implementation("edm.ddpm_step", "thirdparty.diffusers_ddpm", f"{_M}:ddpm_step", "thirdparty", devices=("cpu",),
                   dtypes=("float64", "float32"), modules=("diffusers",),
                   deviations={"edm.operations_match_spec": _DDPM_VARIANCE_FLOOR},
                   notes="DDPMScheduler(clip_sample=False).step (fixed_small variance), its noise handed in"),
    Implementation("edm.sampling_timesteps", "thirdparty.diffusers_ddim", f"{_M}:ddim_sampling_timesteps",
                   "thirdparty", devices=("cpu",), modules=("diffusers",),
                   deviations={"edm.sampling_timesteps": _DDIM_STRIDE,
                               "edm.operations_match_spec": _STRIDE_DIFFERENTIAL},
                   notes="DDIMScheduler.set_timesteps and the previous timestep its step uses"),
    Implementation("edm.sampling_timesteps", "thirdparty.diffusers_ddpm", f"{_M}:ddpm_sampling_timesteps",
                   "thirdparty", devices=("cpu",), modules=("diffusers",),
                   deviations={"edm.operations_match_spec": _TRAILING_EXTRA},
                   notes="DDPMScheduler.set_timesteps and previous_timestep"),
    Implementation("edm.flow_euler_step", "thirdparty.diffusers_flow_match", f"{_M}:flow_match_euler_step",
                   "thirdparty", devices=("cpu",), dtypes=_F32, modules=("diffusers",),
                   notes="FlowMatchEulerDiscreteScheduler.step"),
    Implementation("edm.flow_shift", "thirdparty.diffusers_flow_match", f"{_M}:flow_match_shift", "thirdparty",
                   devices=("cpu",), dtypes=_F32, modules=("diffusers",),
                   deviations={"edm.contract": _FLOW_SHIFT_ACCEPTS},
                   notes="FlowMatchEulerDiscreteScheduler(shift).set_timesteps(sigmas=...).sigmas (float32)"),
):
    REGISTRY.add_implementation(_impl)
