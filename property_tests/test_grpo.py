"""Property tests of the GRPO document (specs/grpo.py), one or more per claim.

Every test runs against every implementation of the operation it names (the spec, the naive eager torch code, the
fused chunked loss, trl's GRPOTrainer loss, a user's --impl). Identities are checked at a tolerance derived from the
size of the terms that cancel (budget.rounding_atol), exactly only where every correct algorithm is exact; the fused
losses against the float64 spec within the error budget; the k3 estimator's mean with a Hoeffding bound.
"""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import assume, given, settings

from eqspec import budget
from specs import grpo

from . import recording
from .harness import checks, close, equal
from .strategies import randn
from .strategies_preference import SequenceCase, sequence_cases
from .test_dpo import check_fused, expect_rejection

ADV, LOGPS, LOSS, FUSED = "grpo.group_advantages", "grpo.token_logps", "grpo.grpo_loss", "grpo.fused_linear_grpo_loss"
F64 = torch.float64


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


# --- advantages --------------------------------------------------------------------------------------------

@st.composite
def reward_batches(draw):
    """(rewards (groups x G), G): 0/1 rewards (R1's rule-based ones) or real-valued, with constant groups."""
    G = draw(st.integers(2, 8), label="group size")
    groups = draw(st.integers(1, 4), label="groups")
    seed = draw(st.integers(0, 2**31), label="seed")
    kind = draw(st.sampled_from(["binary", "real", "with a constant group"]), label="rewards")
    gen = torch.Generator().manual_seed(seed)
    if kind == "binary":
        r = torch.randint(0, 2, (groups, G), generator=gen).to(F64)
    else:
        r = torch.randn(groups, G, generator=gen, dtype=F64) * 3
    if kind == "with a constant group":
        r[0] = r[0, 0]
    return r.reshape(-1), G


def _conditioning(r: torch.Tensor, G: int, std: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(kappa, constant) per group: kappa = max|r| / std(r) (std = none: max|r|), the size of the terms that cancel in
    A = (r - mean) / std relative to A's own scale; constant: the groups of equal rewards (A = 0 by convention)."""
    r = r.to(F64).view(-1, G)
    constant = (r == r[:, :1]).all(1)
    if std == "none":
        sigma = torch.ones(r.shape[0], dtype=F64, device=r.device)  # r may be a target's rewards
    else:
        sigma = torch.where(constant, 1.0, r.std(1, correction=1 if std == "sample" else 0))
    return r.abs().amax(1) / sigma, constant


@checks("grpo.advantages_zero_sum", operation=ADV, dtypes=("float64", "float32"))
@given(batch=reward_batches(), std=st.sampled_from(grpo.STDS))
def test_advantages_zero_sum(target, batch, std):
    rewards, G = batch
    A = target(target.tensor(rewards), G, std=std).to(F64).view(-1, G)
    r = target.tensor(rewards).to(F64).view(-1, G)
    dtype = target.torch_dtype
    kappa, constant = _conditioning(r, G, std)
    equal("advantages of a constant-reward group", A[constant], torch.zeros_like(A[constant]))
    if not bool((~constant).any()):
        return
    # the group mean of G rewards is off by up to G u max|r|, and the G centred rewards carry G times that into their
    # sum: G^2 roundings of max|r| / std, the terms that cancel (not of |A|: two near-equal rewards have |A| <= 1
    # but |r| / std large); then the division and this sum round each A once more
    kappa = float(kappa[~constant].max())
    atol = (budget.rounding_atol(dtype, kappa, roundings=G * G)
            + budget.rounding_atol(dtype, float(A.abs().max()), roundings=G))
    close("sum of each group's advantages", A[~constant].sum(1), torch.zeros(int((~constant).sum()), dtype=F64),
          atol=atol)
    if std != "none":
        sd = A[~constant].std(dim=1, correction=1 if std == "sample" else 0)
        # the variance sums G squares (relative, G roundings), the square root, the division and the centring round
        # once each; each centred reward r_i - mean cancels terms of size |r|, so it carries a relative error of
        # G u kappa (first order: measured 0.34 roundings of kappa = 339 for rewards 2.0776, 2.0863 in float64)
        atol = budget.rounding_atol(dtype, 1.0, roundings=G + 6) + budget.rounding_atol(dtype, kappa, roundings=G)
        close(f"{std} std of each group's advantages", sd, torch.ones_like(sd), atol=atol)


@checks("grpo.advantages_affine_invariant", operation=ADV, dtypes=("float64",))
@given(batch=reward_batches(), std=st.sampled_from(grpo.STDS), a=st.sampled_from([1.0, 3.0, 100.0]),
       c=st.sampled_from([-7.0, 0.0, 0.25, 1e3]))
def test_advantages_affine_invariant(target, batch, std, a, c):
    rewards, G = batch
    A = target(rewards, G, std=std)
    moved = a * rewards + c
    A2 = target(moved, G, std=std)
    scale = a if std == "none" else 1.0
    expected = A * scale
    # each side: the mean's error G u kappa (kappa of its own rewards, in units of the first's std: for std = none
    # the comparison is in units of a), the std's relative error (G + 6 roundings of |A|), and a r + c rounded once
    # (kappa of the moved rewards); the mean's error also enters the std squared
    kappa, constant = _conditioning(rewards, G, std)
    kappa_moved, _ = _conditioning(moved, G, std)
    kappa_moved = kappa_moved / (a if std == "none" else 1.0)
    kappa = torch.where(constant, 0.0, kappa + kappa_moved)
    A_max = float(A.abs().max())
    atol = scale * (budget.rounding_atol(F64, float(kappa.max()), roundings=G + 1)
                    + budget.rounding_atol(F64, A_max, roundings=G + 7)
                    + budget.rounding_atol(F64, float(kappa.max()), roundings=G) ** 2 * A_max)
    close(f"advantages of {a} r + {c}", A2, expected, atol=atol)


# catalogue/grpo.md, known answers, given to six decimals: off by at most half a unit of the sixth
KA_HALF_UNIT = 0.5e-6


@checks("grpo.advantages_known_answers", operation=ADV, dtypes=("float64", "float32"))
def test_advantages_known_answers(target):
    dtype = target.torch_dtype

    def check(name, r, expected, **kw):
        G = len(r)
        kappa, _ = _conditioning(_t(r), G, kw.get("std", "sample"))
        # six decimals, and the advantages' rounding in the target's dtype: the mean's G roundings of kappa, the
        # std's G + 6 of |A| (the eps added to it rounds once more)
        atol = (KA_HALF_UNIT + budget.rounding_atol(dtype, float(kappa.max()), roundings=G)
                + budget.rounding_atol(dtype, max(abs(x) for x in expected), roundings=G + 7))
        close(name, target(target.tensor(_t(r)), G, **kw), _t(expected), atol=atol)

    check("r = [1,0,0,1], sample std, eps = 1e-4 (TRL)", [1, 0, 0, 1], [0.865875, -0.865875, -0.865875, 0.865875],
          eps=1e-4)
    check("r = [1,0,0,1], population std", [1, 0, 0, 1], [1, -1, -1, 1], std="population")
    check("r = [1,0,0,0], sample std, eps = 1e-4 (TRL)", [1, 0, 0, 0], [1.499700, -0.499900, -0.499900, -0.499900],
          eps=1e-4)
    check("r = [1,0,0,0], Dr. GRPO (std none)", [1, 0, 0, 0], [0.75, -0.25, -0.25, -0.25], std="none")


@checks("grpo.groups_never_mix", operation=ADV, dtypes=("float64", "float32"))
@given(batch=reward_batches(), std=st.sampled_from(grpo.STDS), data=st.data())
def test_groups_never_mix(target, batch, std, data):
    rewards, G = batch
    groups = rewards.numel() // G
    x = target.tensor(rewards)
    A = target(x, G, std=std)
    k = data.draw(st.integers(0, groups - 1), label="perturbed group")
    moved = x.clone()
    moved[k * G:(k + 1) * G] = target.tensor(randn(k + 11, G) * 5 + 2)
    A_moved = target(moved, G, std=std)
    others = torch.ones(rewards.numel(), dtype=torch.bool)
    others[k * G:(k + 1) * G] = False
    equal(f"advantages outside group {k}", A_moved[others], A[others])
    perm = torch.arange(rewards.numel())
    perm[k * G:(k + 1) * G] = k * G + torch.randperm(G, generator=torch.Generator().manual_seed(k))
    # the mean and std are order-independent only up to the summation order: both orders' means are off by up to
    # G u kappa (kappa = max|r| / std of the group), their stds by G + 6 roundings of |A|
    kappa, _ = _conditioning(x, G, std)
    A_max = float(A.abs().max())
    dtype = target.torch_dtype
    atol = (budget.rounding_atol(dtype, float(kappa[k]), roundings=G)
            + budget.rounding_atol(dtype, A_max, roundings=G + 7)
            + budget.rounding_atol(dtype, float(kappa[k]), roundings=G) ** 2 * A_max)
    close(f"advantages of group {k} permuted", target(x[perm], G, std=std), A[perm], atol=atol)


# --- the loss ------------------------------------------------------------------------------------------------

def _logps_case(seed: int, N: int, T: int, *, spread: float = 3.0):
    gen = torch.Generator().manual_seed(seed)
    logps = -torch.rand(N, T, generator=gen, dtype=F64) * spread
    mask = torch.zeros(N, T, dtype=torch.int64)
    for i in range(N):
        n = int(torch.randint(1, T + 1, (1,), generator=gen))
        mask[i, :n] = 1
    A = torch.randn(N, generator=gen, dtype=F64)
    return logps, mask, A


@checks("grpo.on_policy_reinforce", operation=LOSS, requires=("grad",), dtypes=("float64",))
@pytest.mark.parametrize("loss_type", grpo.AGGREGATIONS)  # each aggregation every run, not by the luck of the draw
@given(seed=st.integers(0, 2**31), N=st.integers(1, 6), T=st.integers(1, 9), explicit_old=st.booleans())
def test_on_policy_reinforce(target, loss_type, seed, N, T, explicit_old):
    logps, mask, A = _logps_case(seed, N, T)
    lp = logps.clone().requires_grad_(True)
    L_max = T + 3
    old = logps.clone() if explicit_old else None
    loss = target(lp, old, None, A, mask, beta=0.0, loss_type=loss_type, max_completion_length=L_max)
    (g,) = torch.autograd.grad(loss, lp)
    m = mask.to(F64)
    lengths = m.sum(-1)
    weight = {"grpo": 1 / (N * lengths), "dr_grpo": torch.full((N,), 1 / (N * L_max), dtype=F64),
              "bnpo": torch.full((N,), 1 / float(lengths.sum()), dtype=F64)}
    weight["dapo"] = weight["bnpo"]
    expected = -(A * weight[loss_type])[:, None] * m
    # rho = exp(0) = 1 exactly; the backward rounds the aggregation's two divisions and the product by A, and the
    # expected value its product of the counts, the division and the product by A: six roundings of each entry
    close(f"{loss_type}: d loss / d log pi (REINFORCE with the group baseline)", g, expected,
          atol=budget.rounding_atol(F64, float(expected.abs().max()), roundings=6))
    value = {"grpo": -A.mean(), "dr_grpo": -(A * lengths).sum() / (N * L_max),
             "bnpo": -(A * lengths).sum() / lengths.sum()}
    value["dapo"] = value["bnpo"]
    # the loss sums up to N T per-token terms -A_i and divides (grpo: T per sequence, then the mean of N); the
    # expected value sums N products: N T + N + 2 roundings of max|A| covers both
    close(f"{loss_type}: the on-policy loss value", loss.detach().reshape(1), value[loss_type].reshape(1),
          atol=budget.rounding_atol(F64, float(A.abs().max()), roundings=N * T + N + 2))
    if loss_type == "grpo":  # centred advantages: the value is 0 while the gradient is not
        Ac = A - A.mean()
        zero = target(logps.clone(), old, None, Ac, mask, beta=0.0, loss_type="grpo")
        # the mean of A is off by N u max|A|, which the centred advantages sum N times (N^2 u max|A|, divided by
        # N in the loss); each centred advantage rounds once more (|Ac| <= 2 max|A|), and the loss's T + N + 2
        # roundings are of entries up to 2 max|A|
        close("grpo loss with group-centred advantages", zero.reshape(1), _t([0.0]),
              atol=budget.rounding_atol(F64, float(A.abs().max()), roundings=2 * N + T + 3))


@checks("grpo.clipping", operation=LOSS, requires=("grad",), dtypes=("float64",))
@given(seed=st.integers(0, 2**31), N=st.integers(1, 6), T=st.integers(1, 9),
       eps=st.sampled_from([(0.2, 0.2), (0.2, 0.28), (0.1, 0.5)]))
def test_clipping(target, seed, N, T, eps):
    eps_lo, eps_hi = eps
    logps, mask, A = _logps_case(seed, N, T)
    gen = torch.Generator().manual_seed(seed + 1)
    rho = torch.exp(torch.randn(N, T, generator=gen, dtype=F64) * 0.4)
    old = logps - torch.log(rho)
    rho = torch.exp(logps - old)  # the ratio the implementation sees (old rounded)
    # rho rounds at the size of the terms of its argument (exp(log pi) / exp(log pi_old) would too)
    rho_terms = rho * (logps.abs() + old.abs() + 2)
    Ab = A[:, None].expand(N, T)
    m = mask.bool()
    # the gradient jumps at the clip bound that applies to the sign of A: the claim has nothing to say about a
    # ratio within its rounding of the bound
    bound = torch.where(Ab > 0, 1 + eps_hi, 1 - eps_lo)
    assume(not bool((m & ((rho - bound).abs() <= budget.eps(F64) * rho_terms)).any()))
    lp = logps.clone().requires_grad_(True)
    loss = target(lp, old, None, A, mask, beta=0.0, epsilon_low=eps_lo, epsilon_high=eps_hi, loss_type="bnpo")
    (g,) = torch.autograd.grad(loss, lp)
    clipped = m & (((Ab > 0) & (rho > 1 + eps_hi)) | ((Ab < 0) & (rho < 1 - eps_lo)))
    equal("gradient where the ratio is clipped", g[clipped], torch.zeros_like(g[clipped]))
    free = m & ~clipped
    expected = -(rho * Ab) / float(mask.sum())
    # both sides: rho's rounding, then the product by A and the division by the token count, once each
    close("gradient -rho A / sum|o| where it is not", g[free], expected[free],
          atol=budget.rounding_atol(F64, float((rho_terms * Ab.abs() / float(mask.sum()) + 2 * expected.abs())
                                               .max()), roundings=2))


# per-token known answers: (rho, A, eps_high) -> loss with eps_low = 0.2, exact; k3 at delta = log pi_ref - log pi,
# given to seven decimals (off by at most half a unit of the seventh)
KA_SURROGATE = [((1.5, 1.0, 0.2), -1.2), ((1.5, 1.0, 0.28), -1.28), ((1.5, -1.0, 0.2), 1.5), ((0.5, 1.0, 0.2), -0.5),
                ((0.5, -1.0, 0.2), 0.8), ((1.1, 1.0, 0.2), -1.1)]
KA_K3 = [(0.1, 0.0051709), (-0.1, 0.0048374), (1.0, 0.7182818), (-1.0, 0.3678794)]
KA_K3_HALF_UNIT = 0.5e-7


def _one_token(target, logp, old=None, ref=None, A=0.0, **kw):
    x = lambda v: None if v is None else target.tensor(_t([[v]]))  # noqa: E731
    return target(x(logp), x(old), x(ref), target.tensor(_t([A])), torch.ones(1, 1, dtype=torch.int64), **kw)


@checks("grpo.surrogate_known_answers", operation=LOSS, dtypes=("float64", "float32"))
def test_surrogate_known_answers(target):
    dtype = target.torch_dtype
    for (rho, A, eps_hi), expected in KA_SURROGATE:
        old = -1.0 - math.log(rho)
        loss = _one_token(target, -1.0, old, None, A, beta=0.0, epsilon_low=0.2, epsilon_high=eps_hi)
        # log pi_old rounded to the dtype, and rho's rounding at the size of the terms of its argument, times |A|;
        # then the product by A (or by the clip bound) and the loss's sign and division by one token
        atol = budget.rounding_atol(dtype, rho * abs(A) * (1.0 + abs(old) + 2) + abs(expected), roundings=2)
        close(f"per-token loss at rho = {rho}, A = {A}, eps_high = {eps_hi}", loss.reshape(1), _t([expected]),
              atol=atol)
    for delta, expected in KA_K3:
        loss = _one_token(target, -2.0, -2.0, -2.0 + delta, 0.0, beta=1.0)
        # log pi_ref = -2 + delta rounded to the dtype moves k3 by |e^delta - 1| times it; k3 = e^delta - delta - 1
        # rounds at the size of its terms
        terms = abs(math.expm1(delta)) * (2 + abs(delta) + 2) + math.exp(delta) + abs(delta) + 1
        close(f"k3 at delta = {delta}", loss.reshape(1), _t([expected]),
              atol=KA_K3_HALF_UNIT + budget.rounding_atol(dtype, terms, roundings=2))


def _k3_terms(logps: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The size of the terms whose rounding moves k3 = e^delta - delta - 1, delta = log pi_ref - log pi: delta's
    subtraction (times the slope |e^delta - 1|), exp, and the two differences."""
    delta = ref - logps
    return torch.expm1(delta).abs() * (ref.abs() + logps.abs()) + torch.exp(delta) + delta.abs() + 1


@checks("grpo.k3_nonnegative", operation=LOSS, requires=("grad",), dtypes=("float64",))
@given(seed=st.integers(0, 2**31), N=st.integers(1, 8), spread=st.sampled_from([0.01, 1.0, 5.0]))
def test_k3_nonnegative(target, seed, N, spread):
    gen = torch.Generator().manual_seed(seed)
    logps = -torch.rand(N, 1, generator=gen, dtype=F64) * 4
    ref = logps + torch.randn(N, 1, generator=gen, dtype=F64) * spread
    ref[0] = logps[0]  # one token where pi = pi_ref
    # k3 >= 0 up to its rounding (e^delta - delta - 1 of a tiny delta may round below 0); at delta = 0 every
    # correct algorithm gives exp(0) - 0 - 1 = 0 exactly
    floor = budget.eps(F64) * _k3_terms(logps, ref)
    for i in range(N):
        value = float(target(logps[i:i + 1], None, ref[i:i + 1], torch.zeros(1, dtype=F64),
                             torch.ones(1, 1, dtype=torch.int64), beta=1.0))
        if value < -float(floor[i]) or (i == 0 and value != 0):
            lp_text, ref_text = budget.distinct_digits(float(logps[i]), float(ref[i]))
            raise AssertionError(f"k3 at log pi = {lp_text}, log pi_ref = {ref_text} is {value:.6g}: it must be >= 0 "
                                 f"(up to its rounding {float(floor[i]):.3g}), and exactly 0 where they are equal")
    lp = logps.clone().requires_grad_(True)
    loss = target(lp, None, ref, torch.zeros(N, dtype=F64), torch.ones(N, 1, dtype=torch.int64), beta=1.0,
                  loss_type="grpo")
    (g,) = torch.autograd.grad(loss, lp)
    # both sides round e^delta at the size of delta's terms, then 1 - e^delta; the backward divides by N and this
    # test multiplies by N
    e = torch.exp(ref - logps)
    terms = e * (ref.abs() + logps.abs() + 1) + 1 + e + 2 * (1 - e).abs()
    close("d k3 / d log pi = 1 - exp(log pi_ref - log pi)", g * N, 1 - e,
          atol=budget.rounding_atol(F64, float(terms.max()), roundings=2))


K3_EXAMPLES = 4
K3_FALSE_ALARM = 1e-6 / K3_EXAMPLES  # per example: 1e-6 for the test's 4 examples together (union bound)


@checks("grpo.k3_unbiased", operation=LOSS, dtypes=("float64",))
@settings(max_examples=K3_EXAMPLES)
@given(seed=st.integers(0, 2**31), K=st.integers(3, 6))
def test_k3_unbiased(target, seed, K):
    """Hoeffding: k3 takes values in [a, b] on a finite support, so the mean of n i.i.d. draws is within
    (b - a) sqrt(ln(2/alpha) / (2n)) of KL(pi || pi_ref) with probability >= 1 - alpha; alpha = 2.5e-7 per
    example keeps the false alarm of the whole test (4 examples) <= 1e-6."""
    gen = torch.Generator().manual_seed(seed)
    pi = torch.softmax(torch.randn(K, generator=gen, dtype=F64) * 1.5, 0)
    pi_ref = torch.softmax(torch.randn(K, generator=gen, dtype=F64) * 1.5, 0)
    n = 40_000
    y = torch.multinomial(pi, n, replacement=True, generator=gen)
    logp, ref = torch.log(pi)[y][None], torch.log(pi_ref)[y][None]
    values = grpo.k3(torch.log(pi), torch.log(pi_ref))
    kl = float(grpo.kl_categorical(pi, pi_ref))

    def mean_and_bound(m: int) -> tuple[float, float]:
        mean = float(target(logp[:, :m], None, ref[:, :m], torch.zeros(1, dtype=F64),
                            torch.ones(1, m, dtype=torch.int64), beta=1.0, loss_type="bnpo"))
        # the float64 mean of m terms rounds each partial sum once (m roundings of max|k3|), beside Hoeffding's
        rounding = budget.rounding_atol(F64, float(values.abs().max()), roundings=m)
        return mean, float(values.max() - values.min()) * math.sqrt(math.log(2 / K3_FALSE_ALARM) / (2 * m)) + rounding

    mean, bound = mean_and_bound(n)
    # the report's picture: the error of prefixes of the same samples, and the bound, against the sample size
    sizes = (n // 64, n // 16, n // 4)
    points = [(m, *mean_and_bound(m)) for m in sizes] + [(n, mean, bound)]
    recording.series("k3_mc_error", f"|mean k3 - KL| (K = {K})", "samples n", "error",
                     [(m, abs(mu - kl)) for m, mu, _ in points], kind="loglog")
    recording.series("k3_mc_error", f"Hoeffding bound, alpha = {K3_FALSE_ALARM:.1e} (K = {K})", "samples n", "error",
                     [(m, b) for m, _, b in points], kind="loglog")
    recording.statistic(f"|mean k3 - KL(pi || pi_ref)| (K = {K}, n = {n})", abs(mean - kl), bound, K3_FALSE_ALARM)
    if abs(mean - kl) > bound:
        raise AssertionError(f"mean of k3 over {n} samples of pi is {mean:.6g}, KL(pi || pi_ref) = {kl:.6g}: "
                             f"|difference| {abs(mean - kl):.3g} > Hoeffding bound {bound:.3g} "
                             f"(alpha = {K3_FALSE_ALARM:.1e})")


@checks("grpo.masked_tokens_never_matter", operation=LOSS, requires=("grad",), dtypes=("float64", "float32"))
@given(seed=st.integers(0, 2**31), N=st.integers(1, 5), T=st.integers(2, 9),
       loss_type=st.sampled_from(grpo.AGGREGATIONS), beta=st.sampled_from([0.0, 0.04]))
def test_masked_tokens_never_matter(target, seed, N, T, loss_type, beta):
    logps, mask, A = _logps_case(seed, N, T)
    assume(bool((mask == 0).any()))
    old, ref = logps - 0.1 * randn(seed + 1, N, T), logps + 0.3 * randn(seed + 2, N, T)
    masked = mask == 0

    def run(lp, old_, ref_):
        x = target.tensor(lp).requires_grad_(True)
        loss = target(x, target.tensor(old_), target.tensor(ref_), target.tensor(A), mask, beta=beta,
                      loss_type=loss_type)
        return loss, torch.autograd.grad(loss, x)[0]

    loss, g = run(logps, old, ref)
    junk = [x.clone() for x in (logps, old, ref)]
    for i, x in enumerate(junk):
        x[masked] = randn(seed + 7 + i, int(masked.sum())) * 10 - 5
    loss2, g2 = run(*junk)
    equal("loss with other values at masked tokens", loss2, loss)
    equal("gradient at unmasked tokens", g2[~masked], g[~masked])
    equal("gradient at masked tokens", g[masked], torch.zeros_like(g[masked]))


@checks("grpo.masked_tokens_never_matter", operation=FUSED, requires=("grad",), dtypes=("float64", "float32"))
@settings(max_examples=8)
@given(case=sequence_cases(prompt=False, max_T=8, max_V=17), loss_type=st.sampled_from(grpo.AGGREGATIONS))
def test_fused_masked_tokens_never_matter(target, case, loss_type):
    mask = case.mask()
    assume(bool((mask == 0).any()))
    hidden, weight = (target.tensor(x) for x in case.hidden_weight())
    ids = case.ids()
    A = randn(case.seed + 4, case.N)
    old, ref = randn(case.seed + 5, case.N, case.T) - 3, randn(case.seed + 6, case.N, case.T) - 3
    masked = mask == 0
    kw = dict(temperature=0.7, beta=0.04, loss_type=loss_type)

    def run(h, ids_, old_, ref_):
        h = h.detach().clone().requires_grad_(True)
        W = weight.detach().clone().requires_grad_(True)
        loss = target(h, W, ids_, mask, A, old_, ref_, **kw)
        return (loss, *torch.autograd.grad(loss, (h, W)))

    loss, dh, dW = run(hidden, ids, old, ref)
    h2, ids2, old2, ref2 = hidden.clone(), ids.clone(), old.clone(), ref.clone()
    h2[masked] = target.tensor(randn(case.seed + 9, int(masked.sum()), case.H) * 7)
    ids2[masked] = (ids2[masked] + 1) % case.V
    old2[masked], ref2[masked] = old2[masked] - 40, ref2[masked] + 40
    loss2, dh2, dW2 = run(h2, ids2, old2, ref2)
    equal("loss with other hidden states, ids and log-probs at masked tokens", loss2, loss)
    equal("d loss / d hidden at unmasked tokens", dh2[~masked], dh[~masked])
    equal("d loss / d hidden at masked tokens", dh[masked], torch.zeros_like(dh[masked]))
    # dW sums over the unmasked tokens only, in the same order: bit-identical
    equal("d loss / d weight", dW2, dW)


# --- per-token log-probs at a temperature --------------------------------------------------------------------

def _logp_terms(z: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log softmax(z) at the ids, the size of the terms whose rounding moves it): the division by the temperature
    (|z| of the target, and of every logit weighted by p in the lse), lse = m + log sum exp(z - m) (the subtractions
    weighted by p, exp and the sum, the log, the final sum: dpo.scored_token_magnitudes), the difference, and the
    V - 1 partial sums of the lse's sum, which a check without a baseline must allow for."""
    lse = torch.logsumexp(z, -1, keepdim=True)
    p = torch.exp(z - lse)
    m = z.amax(-1, keepdim=True)
    z_y = z.gather(-1, ids[..., None])
    logp = z_y - lse
    size = (z_y.abs() + (z_y - m).abs() + (p * (z.abs() + (z - m).abs())).sum(-1, keepdim=True) + (lse - m).abs()
            + lse.abs() + 2 + logp.abs() + z.shape[-1])
    return logp.squeeze(-1), size.squeeze(-1)


@checks("grpo.temperature_scaled_logps", operation=LOGPS, dtypes=("float64", "float32"))
@given(case=sequence_cases(max_V=40), temperature=st.sampled_from([0.3, 0.6, 1.0, 1.7]))
def test_temperature_scaled_logps(target, case, temperature):
    logits, ids = target.tensor(case.logits()), case.ids()
    out = target(logits, ids, temperature=temperature)
    z = logits.to(F64).cpu() / temperature  # beside the host ids
    manual, size = _logp_terms(z, ids)
    dtype = target.torch_dtype
    # the target in its dtype and this float64 reference, each within its own rounding of the same terms
    close("log softmax(logits / T) at the ids", out, manual,
          atol=budget.rounding_atol(dtype, float(size.max())) + budget.rounding_atol(F64, float(size.max())))
    if temperature == 1.0:
        equal("T = 1 equals the unscaled call", out, target(logits, ids))
    # all V ids of one position: the probabilities sum to 1, each off by its log-prob's rounding (relative), then
    # exp and the float64 sum of V terms round once each
    row = logits[:1, :1].expand(1, case.V, case.V)
    every = target(row.contiguous(), torch.arange(case.V)[None], temperature=temperature)
    logp_row, size_row = _logp_terms(row.to(F64).cpu() / temperature, torch.arange(case.V)[None])
    close("sum over the vocabulary of exp(log pi)", every.to(F64).exp().sum(-1), _t([1.0]),
          atol=budget.rounding_atol(dtype, float((logp_row.exp() * size_row).sum()))
          + budget.rounding_atol(F64, 1.0, roundings=case.V + 1))


# --- rule-based rewards --------------------------------------------------------------------------------------

FORMAT_CASES = [  # (completion, reward)
    ("<think>short</think><answer>4</answer>", 1.0),
    ("<think>\nFirst, 2 + 2.\nThen check:\n4 - 2 = 2.\n</think>\n<answer>\n4\n</answer>", 1.0),
    ("<think>a\nb</think> <answer>x</answer>\n", 1.0),
    ("<think>no answer block</think>", 0.0),
    ("<answer>4</answer>", 0.0),
    ("think>missing bracket</think><answer>4</answer>", 0.0),
    ("<think>outer <think>nested</think></think><answer>4</answer>", 0.0),
    ("<think>x</think><answer>4</answer> and more text", 0.0),
    ("preamble <think>x</think><answer>4</answer>", 0.0),
]


@checks("grpo.format_reward", operation="grpo.format_reward")
def test_format_reward(target):
    completions = [c for c, _ in FORMAT_CASES]
    got = target(completions)
    for (c, expected), r in zip(FORMAT_CASES, got.tolist()):
        if r != expected:
            raise AssertionError(f"format reward of {c!r} is {r}, expected {expected}")


ACCURACY_CASES = [  # (completion, solution, reward; NaN: unparseable solution)
    ("... so the answer is \\boxed{4}", "4", 1.0),
    ("\\boxed{3} wait, no: \\boxed{4}", "\\boxed{4}", 1.0),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),
    ("\\boxed{ 4.0 }", "$4$", 1.0),
    ("the answer is 4", "4", 0.0),
    ("\\boxed{5}", "4", 0.0),
    ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}", 0.0),
    ("\\boxed{4}", "   ", math.nan),
]


@checks("grpo.accuracy_reward", operation="grpo.accuracy_reward")
def test_accuracy_reward(target):
    got = target([c for c, _, _ in ACCURACY_CASES], [s for _, s, _ in ACCURACY_CASES]).tolist()
    for (c, s, expected), r in zip(ACCURACY_CASES, got):
        same = (math.isnan(r) and math.isnan(expected)) or r == expected
        if not same:
            raise AssertionError(f"accuracy reward of {c!r} against {s!r} is {r}, expected {expected}")


# --- the fused loss from hidden states -------------------------------------------------------------------------

def _clear_of_clip_bound(target, hidden, weight, ids, mask, A, old, *, temperature=1.0, epsilon_low=0.2,
                         epsilon_high=None):
    """old log-probs (float64) with every scored token's ratio at least twice its rounding away from the clip bound
    that applies to the sign of its advantage (1 + eps_high for A > 0, 1 - eps_low for A < 0), moved away from it
    where it was closer.

    The gradient of the clipped surrogate jumps there, from -rho A to 0: a correct algorithm whose log-probs round
    (in the target's dtype, at the size a of their terms, plus the difference log pi - log pi_old) to the other side
    of the bound is right, and the budget cannot hold it. The claim is about gradients where they are defined; the
    ratios still fall on both sides of the bounds. Rounding old to the dtype afterwards moves the ratio by at most
    half that distance.
    """
    hidden, weight, ids, mask, A = (x.cpu() for x in (hidden, weight, ids, mask, A))  # beside old, on the host
    logps, sizes, _ = grpo.fused_token_magnitudes(hidden, weight, ids, mask, temperature=temperature)
    eps_hi = epsilon_low if epsilon_high is None else epsilon_high
    A = A.to(F64)[:, None].expand_as(logps)
    bound = torch.where(A > 0, math.log1p(eps_hi), math.log1p(-epsilon_low))
    band = budget.eps(target.torch_dtype) * (sizes + logps.abs() + old.abs() + 2)
    log_rho = logps - old
    side = torch.where(log_rho >= bound, 1.0, -1.0)
    near = (mask != 0) & ((log_rho - bound).abs() < 2 * band)
    return torch.where(near, logps - (bound + side * 2 * band), old)


@checks("grpo.fused_matches_spec", operation=FUSED, requires=("grad",), dtypes=("float64", "float32", "bfloat16"))
@pytest.mark.parametrize("loss_type", grpo.AGGREGATIONS)
@settings(max_examples=10)  # x 4 aggregations
@given(case=sequence_cases(prompt=False), temperature=st.sampled_from([0.6, 1.0]), beta=st.sampled_from([0.0, 0.04]),
       eps_high=st.sampled_from([None, 0.28]), on_policy=st.booleans(), data=st.data())
def test_fused_matches_spec(target, loss_type, case, temperature, beta, eps_high, on_policy, data):
    hidden, weight = (target.tensor(x) for x in case.hidden_weight())
    ids, mask = case.ids().to(target.device), case.mask().to(target.device)  # the spec runs beside the target
    A = target.tensor(randn(case.seed + 4, case.N))
    # the old and reference policies: the current one moved a little (ratios around the clip range)
    # on the host, where the noise below is drawn
    ref_logps = grpo.token_logps(hidden.double() @ weight.double().T, ids, temperature=temperature).cpu()
    old = None
    if not on_policy:
        old = ref_logps + 0.3 * randn(case.seed + 5, case.N, case.T)
        old = target.tensor(_clear_of_clip_bound(target, hidden, weight, ids, mask, A, old, temperature=temperature,
                                                 epsilon_high=eps_high))
    ref = target.tensor(ref_logps + 0.5 * randn(case.seed + 6, case.N, case.T))
    extra = {}
    if target.provides("chunk_size"):
        extra["chunk_size"] = data.draw(st.integers(1, max(1, case.N * case.T // 2)), label="chunk_size")
    check_fused(target, grpo.fused_linear_grpo_loss, grpo.fused_magnitudes, hidden, weight, ids, mask, A, old,
                ref, extra=extra, temperature=temperature, beta=beta, epsilon_high=eps_high, loss_type=loss_type,
                max_completion_length=case.T + 2)


@checks("grpo.fused_matches_spec", operation=FUSED, requires=("grad", "chunk_size"), dtypes=("float32",))
def test_error_vs_chunk_size(target):
    if not target.provides("chunk_size"):
        pytest.skip(f"{target.name} has no chunk size to sweep")
    case = SequenceCase(N=4, T=24, V=512, H=32, prompts=(0, 0, 0, 0), completions=(24, 20, 7, 13), sharpness=2.0,
                        seed=5002)
    hidden, weight = (target.tensor(x) for x in case.hidden_weight())
    ids, mask = case.ids().to(target.device), case.mask().to(target.device)  # the spec runs beside the target
    A = target.tensor(randn(case.seed + 4, case.N))
    points = []
    for chunk in (1, 5, 16, 64, 4096):
        loss, _, _ = check_fused(target, grpo.fused_linear_grpo_loss, grpo.fused_magnitudes, hidden, weight,
                                 ids, mask, A, None, None, extra={"chunk_size": chunk}, beta=0.0)
        ref = grpo.fused_linear_grpo_loss(hidden.double(), weight.double(), ids, mask, A, beta=0.0)
        points.append((chunk, abs(float(loss.detach()) - float(ref))))
    recording.series("grpo_error_vs_chunk", f"{target.name} {target.dtype}", "chunk size (tokens)", "|loss - spec|",
                     points)


@checks("grpo.deepseekmath_defaults", operation=FUSED, requires=("grad",), dtypes=("float64", "float32"))
def test_deepseekmath_defaults(target):
    """Off-policy, with a reference: every default (aggregation, beta, eps) shows in the value."""
    case = SequenceCase(N=4, T=6, V=11, H=8, prompts=(0, 0, 0, 0), completions=(6, 2, 4, 1), sharpness=2.0,
                        seed=5003)
    hidden, weight = (target.tensor(x) for x in case.hidden_weight())
    ids, mask = case.ids().to(target.device), case.mask().to(target.device)  # the spec runs beside the target
    A = target.tensor(randn(case.seed + 4, case.N))
    logps = grpo.token_logps(hidden.double() @ weight.double().T, ids).cpu()  # on the host, where the noise is drawn
    old = logps + 0.4 * randn(case.seed + 5, case.N, case.T)
    old = target.tensor(_clear_of_clip_bound(target, hidden, weight, ids, mask, A, old))
    ref = target.tensor(logps + 0.8 * randn(case.seed + 6, case.N, case.T))
    check_fused(target, _deepseekmath, grpo.fused_magnitudes, hidden, weight, ids, mask, A, old, ref)


def _deepseekmath(*args, **kwargs):
    return grpo.fused_linear_grpo_loss(*args, temperature=1.0, beta=0.04, epsilon_low=0.2, epsilon_high=0.2,
                                       loss_type="grpo", **kwargs)


# --- contracts -------------------------------------------------------------------------------------------------

ADV_BAD_INPUT = {  # case -> (rewards, group_size, kwargs, argument)
    "rewards not a multiple of the group size": (randn(1, 7), 4, {}, "rewards"),
    "group size 0": (randn(1, 8), 0, {}, "group_size"),
    "group of one with the sample std": (randn(1, 8), 1, {}, "group_size"),  # ddof = 1 needs two
    "unknown std": (randn(1, 8), 4, {"std": "unbiased"}, "std"),
    "negative eps": (randn(1, 8), 4, {"eps": -1e-4}, "eps"),
    "rewards of rank 2": (randn(1, 2, 4), 4, {}, "rewards"),
}


@checks("grpo.grpo_contract", operation=ADV)
@pytest.mark.parametrize("case", list(ADV_BAD_INPUT))
def test_advantages_reject_bad_input(target, case):
    r, G, kw, argument = ADV_BAD_INPUT[case]
    r = target.tensor(r)
    expect_rejection(target, lambda fn: fn(r, G, **kw), argument, case)


def _loss_inputs(N=3, T=4):
    return [randn(1, N, T) - 3, randn(2, N, T) - 3, randn(3, N, T) - 3, randn(4, N), torch.ones(N, T)]


LOSS_BAD_INPUT = {
    "old_logps of another shape": (lambda xs: xs.__setitem__(1, randn(2, 3, 5)), {}, "old_logps"),
    "advantages per token": (lambda xs: xs.__setitem__(3, randn(4, 3, 4)), {}, "advantages"),
    "no reference with beta != 0": (lambda xs: xs.__setitem__(2, None), {"beta": 0.04}, "ref_logps"),
    "unknown loss type": (lambda xs: None, {"loss_type": "grpo_v2"}, "loss_type"),
    "max_completion_length below T": (lambda xs: None, {"loss_type": "dr_grpo", "max_completion_length": 2},
                                      "max_completion_length"),
    "mask of 0.5": (lambda xs: xs.__setitem__(4, torch.full((3, 4), 0.5)), {}, "completion_mask"),
    # every numeric option outside its range, each on its own (check_loss_options): a check weakened to let any of
    # these through computes a loss nobody asked for
    "negative beta": (lambda xs: None, {"beta": -0.04}, "beta"),
    "beta NaN": (lambda xs: None, {"beta": math.nan}, "beta"),
    "beta True": (lambda xs: None, {"beta": True}, "beta"),
    "negative epsilon_low": (lambda xs: None, {"epsilon_low": -0.2}, "epsilon_low"),
    "epsilon_low infinite": (lambda xs: None, {"epsilon_low": math.inf}, "epsilon_low"),
    "epsilon_low of 1": (lambda xs: None, {"epsilon_low": 1.0}, "epsilon_low"),
    "negative epsilon_high": (lambda xs: None, {"epsilon_high": -0.28}, "epsilon_high"),
    "max_completion_length not an integer": (lambda xs: None, {"loss_type": "dr_grpo", "max_completion_length": 4.5},
                                             "max_completion_length"),
}


@checks("grpo.grpo_contract", operation=LOSS)
@pytest.mark.parametrize("case", list(LOSS_BAD_INPUT))
def test_loss_rejects_bad_input(target, case):
    edit, kw, argument = LOSS_BAD_INPUT[case]
    xs = _loss_inputs()
    edit(xs)
    xs = [target.tensor(x) if x is not None and i < 4 else x for i, x in enumerate(xs)]
    expect_rejection(target, lambda fn: fn(*xs, **kw), argument, case)


REWARD_BAD_INPUT = {  # case -> completions; each alone is rejected (a non-empty list of strings)
    "a string, not a list": "<think>a</think><answer>4</answer>",
    "an empty list": [],
    "a number among the strings": ["<think>a</think><answer>4</answer>", 4],
    "no string at all": [None],
}


@checks("grpo.grpo_contract", operation="grpo.format_reward")
@pytest.mark.parametrize("case", list(REWARD_BAD_INPUT))
def test_format_reward_rejects_bad_input(target, case):
    expect_rejection(target, lambda fn: fn(REWARD_BAD_INPUT[case]), "completions", case)


@checks("grpo.grpo_contract", operation="grpo.accuracy_reward")
@pytest.mark.parametrize("case", list(REWARD_BAD_INPUT))
def test_accuracy_reward_rejects_bad_input(target, case):
    good = ["<think>a</think><answer>4</answer>"]
    completions = REWARD_BAD_INPUT[case]
    solutions = good * max(len(completions), 1) if isinstance(completions, list) else good
    expect_rejection(target, lambda fn: fn(completions, solutions), "completions", case)
    expect_rejection(target, lambda fn: fn(good, completions), "solutions", case)


@checks("grpo.grpo_contract", operation=LOGPS)
@pytest.mark.parametrize("case", ["temperature 0", "id outside the vocabulary"])
def test_token_logps_reject_bad_input(target, case):
    logits, ids = target.tensor(randn(1, 2, 3, 5)), torch.zeros(2, 3, dtype=torch.int64)
    if case == "temperature 0":
        expect_rejection(target, lambda fn: fn(logits, ids, temperature=0.0), "temperature", case)
    else:
        expect_rejection(target, lambda fn: fn(logits, ids + 5), "completion_ids", case)


@checks("grpo.grpo_contract", operation=FUSED)
@pytest.mark.parametrize("case", ["hidden size mismatch", "ids outside the vocabulary"])
def test_fused_rejects_bad_input(target, case):
    N, T, H, V = 2, 3, 4, 6
    hidden, weight = target.tensor(randn(1, N, T, H)), target.tensor(randn(2, V, H + (case == "hidden size mismatch")))
    ids = torch.zeros(N, T, dtype=torch.int64) + (V if case == "ids outside the vocabulary" else 0)
    argument = "weight" if case == "hidden size mismatch" else "completion_ids"
    expect_rejection(target, lambda fn: fn(hidden, weight, ids, torch.ones(N, T), target.tensor(randn(3, N)), None,
                                           None, beta=0.0), argument, case)
