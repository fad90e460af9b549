"""EDM eq. 5 and Table 1's time steps: the N + 1 sampling times of each kind, ending in t_N = 0, and iDDPM's
discrete noise levels u_j (catalogue/edm.md A.2, A.4).
"""

from __future__ import annotations

import math

import torch

from eqspec.outputs import Output
from eqspec.registry import operation, spec

from ..validators import F64, check_choice, check_count, check_real
from .conventions import DOC
from .table1 import (
    EDM_RHO,
    EDM_SIGMA_MAX,
    EDM_SIGMA_MIN,
    IDDPM_C1,
    IDDPM_C2,
    IDDPM_J0,
    IDDPM_M,
    KINDS,
    VE_SIGMA_MAX,
    VE_SIGMA_MIN,
    VP_EPS_S,
)


@spec(DOC, latex=r"\bar\alpha_j=\sin^2\!\big(\tfrac{\pi}{2}\tfrac{j}{M(C_2+1)}\big),\ u_M=0,\ "
                 r"u_{j-1}=\sqrt{\frac{u_j^2+1}{\max(\bar\alpha_{j-1}/\bar\alpha_j,\,C_1)}-1}",
      source="EDM Table 1 (iDDPM noise levels); training/networks.py iDDPMPrecond")
def iddpm_u(M: int = IDDPM_M, C1: float = IDDPM_C1, C2: float = IDDPM_C2) -> torch.Tensor:
    def alpha_bar(j):
        return math.sin(0.5 * math.pi * j / M / (C2 + 1)) ** 2

    u = [0.0] * (M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(alpha_bar(j - 1) / alpha_bar(j), C1) - 1)
    return torch.tensor(u, dtype=F64)


@spec(DOC, latex=r"t_{i<N}=\Big(\sigma_{max}^{1/\rho}+\tfrac{i}{N-1}"
                 r"\big(\sigma_{min}^{1/\rho}-\sigma_{max}^{1/\rho}\big)\Big)^\rho,"
                 r"\ t_N=0",
      source="EDM eq. 5; generate.py edm_sampler; k-diffusion get_sigmas_karras",
      convention="N + 1 values: linspace(0, 1, N) then a trailing zero (N = 1 gives sigma_max, 0).")
def rho_steps(N: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    i = torch.arange(N, dtype=F64)
    ramp = i / max(N - 1, 1)
    t = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros(1, dtype=F64)])


@operation(
    DOC,
    latex=r"\text{EDM: eq. 5};\ \text{VP: }t_i=1+\tfrac{i}{N-1}(\epsilon_s-1);\ "
          r"\text{VE: }t_i=\sigma_{max}^2(\sigma_{min}^2/\sigma_{max}^2)^{i/(N-1)};\ "
          r"\text{iDDPM: }u_{\lfloor j_0+\frac{M-1-j_0}{N-1}i+\frac12\rfloor};\ t_N=0",
    source="EDM Table 1 (time steps) and eq. 5; catalogue/edm.md A.2, A.4",
    returns="t_steps",
    summary="The N + 1 sampling times of Table 1 for kind 'edm' (sigma_min, sigma_max, rho), 'vp' (epsilon_s), 've' or "
            "'iddpm', decreasing and ending in t_N = 0; sigma_min/sigma_max default to the kind's Table 1 values. "
            "Returns a 1-D CPU tensor of the requested dtype.",
    dtypes=("float64", "float32"),
    outputs=(Output("t_steps", shape="(N + 1,)", dtype="dtype", device="cpu"),),
    capabilities=tuple(f"kind:{k}" for k in KINDS),
)
def time_steps(N: int, *, kind: str = "edm", sigma_min: float | None = None, sigma_max: float | None = None,
               rho: float = EDM_RHO, epsilon_s: float = VP_EPS_S, dtype: torch.dtype = torch.float64):
    check_count("N", N, 1)
    check_choice("kind", kind, KINDS)
    check_real("rho", rho, low=1e-3, allow_inf=False)
    if kind == "edm":
        lo = check_real("sigma_min", EDM_SIGMA_MIN if sigma_min is None else sigma_min, low=1e-300)
        hi = check_real("sigma_max", EDM_SIGMA_MAX if sigma_max is None else sigma_max, low=lo)
        t = rho_steps(N, lo, hi, rho)
    elif kind == "vp":
        eps = check_real("epsilon_s", epsilon_s, low=0.0, high=1.0)
        i = torch.arange(N, dtype=F64)
        t = torch.cat([1 + i / max(N - 1, 1) * (eps - 1), torch.zeros(1, dtype=F64)])
    elif kind == "ve":
        lo = check_real("sigma_min", VE_SIGMA_MIN if sigma_min is None else sigma_min, low=1e-300)
        hi = check_real("sigma_max", VE_SIGMA_MAX if sigma_max is None else sigma_max, low=lo)
        i = torch.arange(N, dtype=F64)
        # (sigma_min / sigma_max)^(2 i / (N - 1)), not (sigma_min^2 / sigma_max^2)^(...): both squares underflow to 0
        # for sigmas near 1e-300, which the contract admits, and 0 / 0 is no schedule
        t = torch.cat([hi**2 * (lo / hi) ** (2 * i / max(N - 1, 1)), torch.zeros(1, dtype=F64)])
    else:
        u = iddpm_u()
        i = torch.arange(N, dtype=F64)
        j = torch.floor(IDDPM_J0 + (IDDPM_M - 1 - IDDPM_J0) / max(N - 1, 1) * i + 0.5).long()
        t = torch.cat([u[j], torch.zeros(1, dtype=F64)])
    return t.to(dtype)
