"""RL basics: the grid world, the Bellman equation, the Bellman optimality equation, value and policy iteration.

Book: S. Zhao, *Mathematical Foundations of Reinforcement Learning* (Springer 2025; the public book repository,
chapters 1-4). Post: the seed's grid-world article. Equations, conventions and known answers:
catalogue/rl_zhao.md (C.1-C.3).

Notation (Ch. 2): P[s, a, s'] = p(s'|s, a), R[s, a] = sum_r p(r|s, a) r, pi[s, a] = pi(a|s), v (S,), q (S, A).
The grid world follows the book, not its public code (design.md, "Conventions where sources disagree"):
forbidden cells can be entered, a bump into the boundary stays with r_boundary, the target is not absorbing.
Greedy policies break ties towards the lowest action index (a_1 = up first), counting as tied every action
within TIE_RTOL * max(1, max|q|) of the maximum, so that implementations rounding differently choose alike.
"""

from __future__ import annotations

import torch

from eqspec.contracts import ArgumentError
from eqspec.domain import Built, Choice, Domain, Int, Optional, Real
from eqspec.outputs import Output
from eqspec.registry import REGISTRY, claim, operation, spec

from .mdp import EPS, F64, POLICY, P_pi, check_mdp, check_policy, check_values, dense, is_stochastic, r_pi
from .validators import check_count, check_real

DOC = "rl_basics"

# ---------------------------------------------------------------------------------------------------
# The grid world (Ch. 1; L1 slides' reward table)
# ---------------------------------------------------------------------------------------------------

ACTIONS = ("up", "right", "down", "left", "stay")  # a_1 .. a_5
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1), (0, 0))  # (d row, d col), rows counted downwards


def _check_cell(name: str, cell, rows: int, cols: int) -> tuple[int, int]:
    if (not isinstance(cell, (tuple, list)) or len(cell) != 2
            or not all(isinstance(c, int) and not isinstance(c, bool) for c in cell)):
        raise ArgumentError(name.split()[0], f"{name} must be a (row, col) pair of integers, got {cell!r}")
    r, c = cell
    if not (1 <= r <= rows and 1 <= c <= cols):
        raise ArgumentError(name.split()[0],
                            f"{name} {cell!r} is outside the {rows} x {cols} grid (rows and columns count from 1)")
    return r, c


@operation(
    DOC,
    latex=r"s'=\begin{cases}s&\text{bump}\\s+\Delta_a&\text{else}\end{cases},\quad "
          r"r=\begin{cases}r_{boundary}&\text{bump}\\r_{target}&s'=s_{target}\\"
          r"r_{forbidden}&s'\in\mathcal S_{forbidden}\\r_{other}&\text{else}\end{cases}",
    source="Zhao Ch. 1 (grid world, actions a_1..a_5, reward table of the L1 slides); catalogue C.1",
    summary="The book's deterministic grid world: rows x cols cells s_i numbered row-major, actions up, right, "
            "down, left, stay. forbidden: (row, col) cells counted from 1, target: (row, col). Returns "
            "P (S, 5, S) and R (S, 5), float64.",
    returns="(P, R)",
    convention="Forbidden cells can be entered (r_forbidden, also when staying in one); a bump into the boundary "
               "leaves the agent in place with r_boundary; entering or staying in the target gives r_target; the "
               "target is not absorbing (a continuing task).",
    dtypes=("float64",),
    outputs=(
        Output("P", shape="(rows * cols, 5, rows * cols)", dtype="float64",
               holds="bool((((dense(P) == 0) | (dense(P) == 1)).all() & (dense(P).sum(-1) == 1).all()))",
               holds_words="deterministic: a single 1 per (s, a) row"),
        Output("R", shape="(rows * cols, 5)", dtype="float64", holds="bool(isfinite(R).all())",
               holds_words="finite"),
    ),
)
def grid_world(rows: int, cols: int, forbidden, target, *, r_boundary: float = -1.0, r_forbidden: float = -1.0,
               r_target: float = 1.0, r_other: float = 0.0):
    rows = check_count("rows", rows, minimum=1)
    cols = check_count("cols", cols, minimum=1)
    forbidden = {_check_cell("forbidden cell", c, rows, cols) for c in forbidden}
    target = _check_cell("target", target, rows, cols)
    # finite rewards: R is an MDP's reward table, which every Bellman operation requires finite
    r_boundary, r_forbidden, r_target, r_other = (check_real(name, r) for name, r in (
        ("r_boundary", r_boundary), ("r_forbidden", r_forbidden), ("r_target", r_target), ("r_other", r_other)))
    S = rows * cols
    P = torch.zeros(S, 5, S, dtype=F64)
    R = torch.zeros(S, 5, dtype=F64)
    for row in range(1, rows + 1):
        for col in range(1, cols + 1):
            s = (row - 1) * cols + (col - 1)
            for a, (dr, dc) in enumerate(MOVES):
                r2, c2 = row + dr, col + dc
                if not (1 <= r2 <= rows and 1 <= c2 <= cols):
                    P[s, a, s] = 1.0
                    R[s, a] = r_boundary
                    continue
                P[s, a, (r2 - 1) * cols + (c2 - 1)] = 1.0
                R[s, a] = (r_target if (r2, c2) == target else
                           r_forbidden if (r2, c2) in forbidden else r_other)
    return P, R


# ---------------------------------------------------------------------------------------------------
# The Bellman equation (Ch. 2)
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"v(s)=\sum_a\pi(a|s)\Big[\sum_r p(r|s,a)\,r+\gamma\sum_{s'}p(s'|s,a)\,v(s')\Big]",
      source="Zhao Ch. 2, eq. (2.7) (elementwise Bellman equation)")
def bellman_elementwise(P, R, pi, v, gamma: float) -> torch.Tensor:
    """The right-hand side of the Bellman equation, one state at a time (the book's form, no matrices)."""
    P = dense(P)
    S, A = R.shape
    out = torch.empty(S, dtype=F64, device=R.device)
    for s in range(S):
        out[s] = sum(pi[s, a] * (R[s, a] + gamma * sum(P[s, a, t] * v[t] for t in range(S))) for a in range(A))
    return out


@spec(DOC, latex=r"v=r_\pi+\gamma P_\pi v", source="Zhao Ch. 2, eq. (2.9) (matrix-vector form)")
def bellman_matrix(P, R, pi, v, gamma: float) -> torch.Tensor:
    return r_pi(R, pi) + gamma * P_pi(P, pi) @ v


@operation(
    DOC,
    latex=r"v_\pi=(I-\gamma P_\pi)^{-1}r_\pi",
    source="Zhao Ch. 2, §2.7.1 (closed-form solution); invertibility by Gershgorin (erratum: radius "
           r"\sum_{j\ne i}\gamma p_\pi(s_j|s_i))",
    summary="State values of policy pi by the closed form. P (S, A, S) dense or sparse, R (S, A), pi (S, A), "
            "gamma in [0, 1) -> v (S,), float64.",
    returns="v",
    dtypes=("float64",),
    outputs=(Output("v", shape="(P.shape[0],)", dtype="float64"),),
)
def state_values(P, R, pi, gamma: float) -> torch.Tensor:
    S, A, gamma = check_mdp(P, R, gamma)
    check_policy(pi, S, A)
    I = torch.eye(S, dtype=F64, device=R.device)
    return torch.linalg.solve(I - gamma * P_pi(P, pi), r_pi(R, pi))


@operation(
    DOC,
    latex=r"v_{k+1}=r_\pi+\gamma P_\pi v_k,\quad v_k-v_\pi=\gamma^kP_\pi^k(v_0-v_\pi)",
    source="Zhao Ch. 2, §2.7.2 (iterative solution)",
    summary="sweeps iterations of v <- r_pi + gamma P_pi v from v0 (S,). Returns v_sweeps (S,), float64.",
    returns="v",
    dtypes=("float64",),
    outputs=(Output("v", shape="(P.shape[0],)", dtype="float64"),),
)
def iterative_policy_evaluation(P, R, pi, gamma: float, v0, sweeps: int) -> torch.Tensor:
    S, A, gamma = check_mdp(P, R, gamma)
    check_policy(pi, S, A)
    check_values("v0", v0, S)
    check_count("sweeps", sweeps, minimum=0)
    v = v0.to(F64, copy=True)  # the result never aliases the caller's v0 (sweeps = 0)
    for _ in range(sweeps):
        v = bellman_matrix(P, R, pi, v, gamma)
    return v


@operation(
    DOC,
    latex=r"q(s,a)=\sum_r p(r|s,a)\,r+\gamma\sum_{s'}p(s'|s,a)\,v(s')",
    source="Zhao Ch. 2, eq. (2.14) (action value from state values)",
    summary="Action values q (S, A) from state values v (S,): q = R + gamma P v. With v = v_pi this is q_pi.",
    returns="q",
    dtypes=("float64",),
    outputs=(Output("q", shape="R.shape", dtype="float64"),),
)
def action_values(P, R, v, gamma: float) -> torch.Tensor:
    S, A, gamma = check_mdp(P, R, gamma)
    check_values("v", v, S)
    return R + gamma * torch.einsum("sat,t->sa", dense(P), v)


# ---------------------------------------------------------------------------------------------------
# Optimality (Ch. 3) and the algorithms of Ch. 4
# ---------------------------------------------------------------------------------------------------

TIE_RTOL = 64 * EPS  # actions within this much (relative) of the maximum count as tied


@spec(DOC, latex=r"\pi(a|s)=1\iff a=\min\{a': q(s,a')\ge\max_b q(s,b)-\tau\}",
      source="Zhao Ch. 3, Thm 3.5 (a deterministic greedy optimal policy exists)",
      convention="Ties go to the lowest action index; tau = TIE_RTOL * max(1, max|q|).")
def greedy_policy(q: torch.Tensor) -> torch.Tensor:
    tau = TIE_RTOL * max(1.0, float(q.abs().max()))
    tied = q >= q.max(dim=1, keepdim=True).values - tau
    first = tied.to(torch.int8).argmax(dim=1)  # argmax returns the first maximal index
    return torch.nn.functional.one_hot(first, q.shape[1]).to(F64)


@spec(DOC, latex=r"f(v)=\max_\pi(r_\pi+\gamma P_\pi v)=\max_a q(\cdot,a)",
      source="Zhao Ch. 3, eq. (3.3) (Bellman optimality equation); Thm 3.2 (contraction)")
def bellman_optimality_operator(P, R, v, gamma: float) -> torch.Tensor:
    return (R + gamma * torch.einsum("sat,t->sa", dense(P), v)).max(dim=1).values


def _v0(v0, S: int, device: torch.device) -> torch.Tensor:
    if v0 is None:
        return torch.zeros(S, dtype=F64, device=device)
    check_values("v0", v0, S)
    return v0.to(F64, copy=True)


@operation(
    DOC,
    latex=r"q_k=r+\gamma Pv_k,\quad \pi_{k+1}=\mathrm{greedy}(q_k),\quad v_{k+1}=\max_a q_k",
    source="Zhao Ch. 4, Alg. 4.1 (value iteration); Thm 3.3 (geometric convergence)",
    summary="iterations steps of value iteration from v0 (default 0). Returns (values (iterations + 1, S): "
            "v_0 .. v_K, pi (S, A): the greedy policy of q_K). Intermediate v_k are not state values.",
    returns="(values, pi)",
    dtypes=("float64",),
    outputs=(
        Output("values", shape="(None, P.shape[0])", dtype="float64"),
        Output("pi", shape="R.shape", dtype="float64", holds=is_stochastic, holds_words=POLICY),
    ),
)
def value_iteration(P, R, gamma: float, *, iterations: int, v0=None):
    S, A, gamma = check_mdp(P, R, gamma)
    check_count("iterations", iterations, minimum=0)
    vs = [_v0(v0, S, R.device)]
    for _ in range(iterations):
        vs.append(bellman_optimality_operator(P, R, vs[-1], gamma))
    return torch.stack(vs), greedy_policy(action_values(P, R, vs[-1], gamma))


@operation(
    DOC,
    latex=r"v_{\pi_k}=(I-\gamma P_{\pi_k})^{-1}r_{\pi_k},\quad \pi_{k+1}=\mathrm{greedy}(r+\gamma Pv_{\pi_k})",
    source="Zhao Ch. 4, Alg. 4.2 (policy iteration); Lemma 4.1 (monotone improvement)",
    summary="Policy iteration from pi0 (default: a_1 everywhere) with exact evaluation, until the policy is "
            "stable (at most max_iterations improvements). Returns (values (K + 1, S): v_{pi_0} .. v_{pi_K}, "
            "pi_K).",
    returns="(values, pi)",
    convention="Stops when the greedy policy repeats (ties broken as greedy_policy does, so equal-value policies "
               "cannot alternate).",
    dtypes=("float64",),
    outputs=(
        Output("values", shape="(None, P.shape[0])", dtype="float64"),
        Output("pi", shape="R.shape", dtype="float64", holds=is_stochastic, holds_words=POLICY),
    ),
)
def policy_iteration(P, R, gamma: float, *, pi0=None, max_iterations: int = 1000):
    S, A, gamma = check_mdp(P, R, gamma)
    check_count("max_iterations", max_iterations, minimum=1)
    if pi0 is None:
        pi = torch.zeros(S, A, dtype=F64, device=R.device)
        pi[:, 0] = 1.0
    else:
        check_policy(pi0, S, A, "pi0")
        pi = pi0.to(F64, copy=True)  # never the caller's pi0 itself (a pi0 already greedy is returned)
    vs = [state_values(P, R, pi, gamma)]
    for _ in range(max_iterations):
        new_pi = greedy_policy(action_values(P, R, vs[-1], gamma))
        if torch.equal(new_pi, pi):
            break
        pi = new_pi
        vs.append(state_values(P, R, pi, gamma))
    return torch.stack(vs), pi


@operation(
    DOC,
    latex=r"\pi_{k+1}=\mathrm{greedy}(r+\gamma Pv_k),\quad v_{k+1}=T_{\pi_{k+1}}^{\,j}\,v_k",
    source="Zhao Ch. 4, Alg. 4.3 (truncated policy iteration; j = 1 is VI, j = infinity is PI)",
    summary="iterations rounds of truncated policy iteration with j evaluation sweeps, each started from the "
            "previous value. Returns (values (iterations + 1, S), pi: the greedy policy of the last values).",
    returns="(values, pi)",
    dtypes=("float64",),
    outputs=(
        Output("values", shape="(None, P.shape[0])", dtype="float64"),
        Output("pi", shape="R.shape", dtype="float64", holds=is_stochastic, holds_words=POLICY),
    ),
)
def truncated_policy_iteration(P, R, gamma: float, *, j: int, iterations: int, v0=None):
    S, A, gamma = check_mdp(P, R, gamma)
    check_count("j", j, minimum=1)
    check_count("iterations", iterations, minimum=0)
    vs = [_v0(v0, S, R.device)]
    for _ in range(iterations):
        pi = greedy_policy(action_values(P, R, vs[-1], gamma))
        vs.append(iterative_policy_evaluation(P, R, pi, gamma, vs[-1], j))
    return torch.stack(vs), greedy_policy(action_values(P, R, vs[-1], gamma))


def optimal_values(P, R, gamma: float) -> torch.Tensor:
    """v* by policy iteration: exact up to the closed-form solves, in finitely many steps."""
    return policy_iteration(P, R, gamma)[0][-1]


# ---------------------------------------------------------------------------------------------------
# Claims (catalogue "checkable properties" and "known-answer vectors")
# ---------------------------------------------------------------------------------------------------

_EVAL = (f"{DOC}.state_values", f"{DOC}.iterative_policy_evaluation")
_CONTROL = (f"{DOC}.value_iteration", f"{DOC}.policy_iteration", f"{DOC}.truncated_policy_iteration")

claim(DOC, "bellman_equation", kind="identity", operations=(f"{DOC}.state_values",),
      statement="The closed-form v_pi solves the Bellman equation in its elementwise and matrix forms (to the "
                "float64 solve tolerance of specs.mdp.solve_tolerance), and (I - gamma P_pi)^{-1} >= I elementwise.",
      source="Zhao Ch. 2, eqs. (2.7), (2.9), §2.7.1; catalogue C.2")
claim(DOC, "closed_form_equals_iterative", kind="identity", operations=_EVAL,
      statement="K sweeps of iterative evaluation from v_0 leave exactly the error gamma^K P_pi^K (v_0 - v_pi), so "
                "|v_K - v_pi|_inf <= gamma^K |v_0 - v_pi|_inf (+ the solve tolerance).",
      source="Zhao Ch. 2, §2.7.2; catalogue property 1")
claim(DOC, "action_values", kind="identity", operations=(f"{DOC}.action_values",),
      statement="q_pi = r + gamma P v_pi satisfies v_pi = sum_a pi q_pi and the matrix form q = r + gamma P Pi q "
                "(to 1e-10 relative).",
      source="Zhao Ch. 2, eqs. (2.13)-(2.14); catalogue C.2, property 1")
claim(DOC, "value_iteration_contraction", kind="identity", operations=(f"{DOC}.value_iteration",),
      statement="|v_{k+1} - v*|_inf <= gamma |v_k - v*|_inf + 1e-12 at every k; the stopping rule "
                "|v_{k+1} - v_k| < tau gives |v_{k+1} - v*| <= gamma tau / (1 - gamma); the greedy policy of the "
                "limit is optimal.",
      source="Zhao Ch. 3, Thm 3.2-3.3; Ch. 4, Alg. 4.1; catalogue property 2")
claim(DOC, "policy_iteration_monotone", kind="identity", operations=(f"{DOC}.policy_iteration",),
      statement="v_{pi_{k+1}} >= v_{pi_k} - 1e-9; PI stops after finitely many steps at v* (1e-9), the value of "
                "value iteration's greedy limit; VI started at v_{pi_0} stays below: v_k^VI <= v_{pi_k} <= v*.",
      source="Zhao Ch. 4, Alg. 4.2, Lemma 4.1, Box 4.2; catalogue property 3")
claim(DOC, "truncated_pi_interpolates", kind="identity", operations=(f"{DOC}.truncated_policy_iteration",),
      statement="Truncated PI with j = 1 equals value iteration iterate by iterate (1e-12 relative), and with "
                "j large it reaches v* like policy iteration.",
      source="Zhao Ch. 4, Alg. 4.3, §4.3; catalogue property 3")
claim(DOC, "affine_reward_invariance", kind="identity", operations=(f"{DOC}.value_iteration",),
      statement="Rewards alpha r + beta (alpha > 0) give v'* = alpha v* + beta / (1 - gamma) 1 (to 1e-9 "
                "relative) and the same greedy action sets.",
      source="Zhao Ch. 3, Thm 3.6; catalogue property 4")
claim(DOC, "grid_world_tables", kind="known-answer", operations=(f"{DOC}.grid_world", f"{DOC}.value_iteration"),
      statement="The optimal state values of the 5 x 5 grid world match the book's Fig. 3.4 (a) gamma = 0.9, "
                "(b) gamma = 0.5, (c) gamma = 0, (d) r_forbidden = -10, to half a unit of each printed digit; the "
                "grid's action values in the action order up, right, down, left, stay: Ch. 3's q(s_1, .) = "
                "(6.2, 8, 9, 6.2, 7.2) and Ch. 5's 3 x 3 q_pi0(s_1, .) = (-10, 7.29, 7.29, -10, -9).",
      source="Zhao Ch. 3, Fig. 3.4; Ch. 2, Fig. 2.7; Ch. 3 and Ch. 5 examples; catalogue known-answer vectors")
claim(DOC, "worked_examples", kind="known-answer",
      operations=(f"{DOC}.grid_world", f"{DOC}.state_values", f"{DOC}.action_values", f"{DOC}.value_iteration",
                  f"{DOC}.policy_iteration"),
      statement="The book's small examples: the 2 x 2 grid's v = (9, 10, 10, 10) and (8.5, 10, 10, 10); "
                "q(s_1, .) = (6.2, 8, 9, 6.2, 7.2); VI's v_1, v_2; the two-state PI iterates and q_{pi_0}; "
                "Fig. 4.4(b)'s v_{pi_0} and v_{pi_1}.",
      source="Zhao Ch. 2-4 worked examples, Fig. 4.4; catalogue known-answer vectors")
claim(DOC, "rl_basics_contract", kind="contract",
      operations=(f"{DOC}.grid_world", f"{DOC}.state_values", f"{DOC}.iterative_policy_evaluation",
                  f"{DOC}.action_values", *_CONTROL),
      statement="Bad input (P rows not summing to 1, gamma outside [0, 1), a policy of the wrong shape, a cell "
                "off the grid) is rejected with an ArgumentError naming the argument; P may be a torch sparse tensor.",
      source="eqspec/contracts.py (the suite's input contract)")


# ---------------------------------------------------------------------------------------------------
# Domains: every argument over its whole range (eqspec/domain.py); the differential tests draw from them
# ---------------------------------------------------------------------------------------------------
# A world is drawn as a few sizes and a seed (wseed) and built from them alone, by every argument that needs it
# (P, R, and monte_carlo's r), so that P and R always describe one MDP:
#   grid: the book's grid world, 1 x 1 to 4 x 4 (1 x n and n x 1 included), forbidden cells anywhere (none, some,
#         all, the target itself), the target often in a corner, the four rewards drawn from GRID_REWARDS (0 and a
#         positive forbidden reward included; duplicates make actions tie) or Gaussian, times a scale;
#   random: a stochastic MDP of S states and A actions, each pair reaching `succ` successors (1: deterministic
#         rows inside a stochastic world, S: dense rows);
#   deterministic: one successor per pair (chains, self loops, unreachable states).
# Rewards 'ties': integers in -1..1, and for about half the states the last action a copy of the first (same
# successors, same reward), so that greedy choices tie exactly; 'spread': Gaussian. The scale spans 1e-6 .. 1e6
# (below 1 every q is within the absolute tie tolerance TIE_RTOL of the maximum: all actions tie).

WORLDS = ("grid", "random", "deterministic")
GRID_REWARDS = (-10.0, -1.0, 0.0, 1.0, 5.0)
REWARD_NAMES = ("r_boundary", "r_forbidden", "r_target", "r_other")
GAMMA = Real(0.0, 0.999, edges=(0.0, 0.5, 0.9, 0.999))  # the whole of [0, 1) that a float64 solve conditions well


def world_sizes(worlds: tuple[str, ...] = WORLDS) -> dict:
    """The sizes a world is built from (domain_world)."""
    return dict(world=Choice(worlds), rows=Int(1, 4), cols=Int(1, 4), S=Int(1, 6), A=Int(1, 4), succ=Int(1, 6),
                rewards=Choice(("ties", "spread")),
                scale=Real(1e-6, 1e6, edges=(1.0,), log=True), wseed=Int(0, 2**31 - 1))


def named(built: Built, name: str) -> Built:
    """``built`` with a stable name: in a Choice, each named builder is pinned in turn by the differential test
    (an Optional(Built) alone is pinned only at its omission; pin ids use ``__name__``)."""
    object.__setattr__(built, "__name__", name)
    return built


def _pick(seq, gen: torch.Generator):
    return seq[int(torch.randint(0, len(seq), (), generator=gen))]


def domain_world(case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, R) of the world the case's sizes describe (the same every time it is asked for)."""
    g = torch.Generator().manual_seed(case["wseed"])
    scale, ties = case["scale"], case["rewards"] == "ties"
    if case["world"] == "grid":
        rows, cols = case["rows"], case["cols"]
        cells = [(i, j) for i in range(1, rows + 1) for j in range(1, cols + 1)]
        target = _pick([(1, 1), (1, cols), (rows, 1), (rows, cols)] if float(torch.rand((), generator=g)) < 0.5
                       else cells, g)
        density = _pick((0.0, 0.25, 0.5, 1.0), g)
        forbidden = [c for c in cells if float(torch.rand((), generator=g)) < density]
        rewards = {k: (_pick(GRID_REWARDS, g) if ties else 5 * float(torch.randn((), generator=g, dtype=F64))) * scale
                   for k in REWARD_NAMES}
        return grid_world(rows, cols, forbidden, target, **rewards)
    S, A = case["S"], case["A"]
    if case["world"] == "random":
        weights = torch.rand(S, A, S, generator=g, dtype=F64) + 0.05
        keep = torch.rand(S, A, S, generator=g).argsort(-1) < min(case["succ"], S)
        P = weights * keep
        P = P / P.sum(-1, keepdim=True)
    else:
        P = torch.nn.functional.one_hot(torch.randint(0, S, (S, A), generator=g), S).to(F64)
    R = (torch.randint(-1, 2, (S, A), generator=g).to(F64) if ties
         else torch.randn(S, A, generator=g, dtype=F64)) * scale
    if ties and A > 1:
        copy = torch.rand(S, generator=g) < 0.5
        P[copy, A - 1] = P[copy, 0]
        R[copy, A - 1] = R[copy, 0]
    return P, R


WORLD_P = Built(lambda gen, case: domain_world(case)[0], note="P of the drawn world (grid, random, deterministic)")
WORLD_R = Built(lambda gen, case: domain_world(case)[1], note="R of the drawn world")
POLICIES = ("deterministic", "stochastic", "uniform", "sparse", "first")


def domain_policy(kinds: tuple[str, ...] = POLICIES) -> Built:
    """A policy (S, A) for the drawn P: one-hot rows, random rows (squared uniforms: some near 0), uniform rows,
    rows with exact zeros, or a_1 everywhere (the default pi0)."""
    def build(gen, case):
        S, A = case["P"].shape[:2]
        kind = _pick(kinds, gen)
        if kind == "deterministic":
            return torch.nn.functional.one_hot(torch.randint(0, A, (S,), generator=gen), A).to(F64)
        if kind == "first":
            return torch.nn.functional.one_hot(torch.zeros(S, dtype=torch.int64), A).to(F64)
        if kind == "uniform":
            return torch.full((S, A), 1.0 / A, dtype=F64)
        w = torch.rand(S, A, generator=gen, dtype=F64) ** 2
        if kind == "sparse":
            keep = torch.rand(S, A, generator=gen) < 0.5
            keep[torch.arange(S), torch.randint(0, A, (S,), generator=gen)] = True
            w = (w + 0.01) * keep
        return w / w.sum(-1, keepdim=True)
    return Built(build, note=f"policy of kind {kinds}")


def _values(gen, case):
    """State values (S,) for the drawn P: 0, a constant (ties), or Gaussian at the size of R / (1 - gamma)."""
    S = case["P"].shape[0]
    kind = int(torch.randint(0, 4, (), generator=gen))
    if kind == 0:
        return torch.zeros(S, dtype=F64)
    if kind == 1:
        return torch.full((S,), float(torch.randn((), generator=gen, dtype=F64)) * 10 * case["scale"], dtype=F64)
    return torch.randn(S, generator=gen, dtype=F64) * 10 * case["scale"]


VALUES = Built(_values, note="values (S,): zeros, constant or Gaussian x 10 scale")
# Optional(GIVEN_VALUES): v0 pinned both ways
GIVEN_VALUES = Choice((named(Built(_values, note=VALUES.note), "values"),))
EVERY_POLICY = Choice(tuple(named(domain_policy((k,)), k) for k in POLICIES))  # each kind of policy pinned


def _forbidden_cells(gen, case):
    rows, cols = case["rows"], case["cols"]
    cells = [(i, j) for i in range(1, rows + 1) for j in range(1, cols + 1)]
    kind = int(torch.randint(0, 5, (), generator=gen))
    if kind == 0:
        return []
    if kind == 1:
        return cells  # every cell, the target included
    chosen = [c for c in cells if float(torch.rand((), generator=gen)) < 0.4]
    if kind == 2:
        return tuple([list(c) for c in chosen] + [list(c) for c in chosen[:1]])  # lists, one twice
    return chosen


def _target(gen, case):
    rows, cols = case["rows"], case["cols"]
    if float(torch.rand((), generator=gen)) < 0.6:
        return _pick([(1, 1), (1, cols), (rows, 1), (rows, cols)], gen)
    cell = (int(torch.randint(1, rows + 1, (), generator=gen)), int(torch.randint(1, cols + 1, (), generator=gen)))
    return list(cell) if float(torch.rand((), generator=gen)) < 0.3 else cell


def _grid_reward(*edges: float) -> Optional:
    return Optional(Real(-10.0, 10.0, edges=edges))


_WORLD = dict(P=WORLD_P, R=WORLD_R)

REGISTRY.attach_domain(f"{DOC}.grid_world", Domain(
    args=dict(rows=Int(1, 6, edges=(1, 2)), cols=Int(1, 6, edges=(1, 2)),
              forbidden=Built(_forbidden_cells, note="none, all, a random subset (as lists, one twice)"),
              target=Built(_target, note="a corner or any cell"),
              r_boundary=_grid_reward(-1.0, 0.0, 1.0, -10.0), r_forbidden=_grid_reward(-1.0, 0.0, 5.0, -10.0),
              r_target=_grid_reward(1.0, 0.0, -1.0, 10.0), r_other=_grid_reward(0.0, -1.0, 1.0)),
    exact=("P", "R"),
))
REGISTRY.attach_domain(f"{DOC}.state_values", Domain(
    sizes=world_sizes(), args=dict(**_WORLD, pi=EVERY_POLICY, gamma=GAMMA), fixed=("P", "pi"),
))
REGISTRY.attach_domain(f"{DOC}.iterative_policy_evaluation", Domain(
    sizes=world_sizes(),
    args=dict(**_WORLD, pi=EVERY_POLICY, gamma=GAMMA, v0=VALUES, sweeps=Int(0, 40, edges=(0, 1))),
    fixed=("P", "pi"),
))
REGISTRY.attach_domain(f"{DOC}.action_values", Domain(
    sizes=world_sizes(), args=dict(**_WORLD, v=VALUES, gamma=GAMMA), fixed=("P",),
))
REGISTRY.attach_domain(f"{DOC}.value_iteration", Domain(
    sizes=world_sizes(), args=dict(**_WORLD, gamma=GAMMA, iterations=Int(0, 40, edges=(0, 1)),
                                   v0=Optional(GIVEN_VALUES)),
    exact=("pi",), fixed=("P",),
))
REGISTRY.attach_domain(f"{DOC}.policy_iteration", Domain(
    sizes=world_sizes(), args=dict(**_WORLD, gamma=GAMMA, pi0=Optional(EVERY_POLICY),
                                   max_iterations=Optional(Int(1, 30, edges=(1, 2)))),
    exact=("pi",), fixed=("P", "pi0"),
))
REGISTRY.attach_domain(f"{DOC}.truncated_policy_iteration", Domain(
    sizes=world_sizes(), args=dict(**_WORLD, gamma=GAMMA, j=Int(1, 10, edges=(1, 2)),
                                   iterations=Int(0, 20, edges=(0, 1)), v0=Optional(GIVEN_VALUES)),
    exact=("pi",), fixed=("P",),
))
