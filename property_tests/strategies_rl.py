"""Strategies and helpers shared by the RL documents' property tests (rl_basics, monte_carlo, ...).

A random finite MDP is drawn as a handful of integers (sizes, a sparsity level, a seed) and built from a seeded
torch generator, so hypothesis shrinks sizes rather than thousands of floats, and the ci profile's examples are
the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
import torch

from . import recording

F64 = torch.float64


@dataclass(frozen=True)
class RandomMDP:
    S: int
    A: int
    gamma: float
    successors: int  # how many next states each pair can reach (at most S)
    seed: int

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + offset)

    def tensors(self, reward_range: tuple[float, float] = (-1.0, 1.0)):
        """P (S, A, S), r (S, A, S) (a reward per transition), R (S, A) = sum_s' P r."""
        g = self.generator()
        k = min(self.successors, self.S)
        weights = torch.rand(self.S, self.A, self.S, generator=g, dtype=F64) + 0.05
        keep = torch.rand(self.S, self.A, self.S, generator=g).argsort(-1) < k  # k random successors per pair
        P = weights * keep
        P = P / P.sum(-1, keepdim=True)
        lo, hi = reward_range
        r = lo + (hi - lo) * torch.rand(self.S, self.A, self.S, generator=g, dtype=F64)
        return P, r, (P * r).sum(-1)

    def policy(self, deterministic: bool = False, offset: int = 1) -> torch.Tensor:
        g = self.generator(offset)
        if deterministic:
            a = torch.randint(0, self.A, (self.S,), generator=g)
            return torch.nn.functional.one_hot(a, self.A).to(F64)
        w = torch.rand(self.S, self.A, generator=g, dtype=F64) ** 2
        return w / w.sum(-1, keepdim=True)


@st.composite
def random_mdps(draw, *, max_states: int = 30, max_actions: int = 5, gamma=(0.5, 0.99)) -> RandomMDP:
    S = draw(st.integers(1, max_states), label="S")
    A = draw(st.integers(1, max_actions), label="A")
    g = draw(st.floats(*gamma), label="gamma")
    k = draw(st.integers(1, S), label="successors")
    seed = draw(st.integers(0, 2**31 - 1), label="seed")
    return RandomMDP(S, A, g, k, seed)




def parse_table(text: str) -> list[list[str]]:
    """A table printed as in the book, rows separated by '|': the numbers as strings, keeping their printed
    precision (the tolerance of a known answer is half a unit of its last printed digit)."""
    return [row.split() for row in text.split("|")]


def printed_tolerance(number: str) -> float:
    decimals = len(number.split(".")[1]) if "." in number else 0
    return 0.5 * 10.0 ** -decimals


# --- the book's tables (catalogue/rl_zhao.md, known-answer vectors) ------------------------------------------

GRID_5x5 = dict(rows=5, cols=5, forbidden=[(2, 2), (2, 3), (3, 3), (4, 2), (4, 4), (5, 2)], target=(4, 3))

FIG_3_4 = {  # panel -> (gamma, r_forbidden, the book's table as the catalogue gives it, rows top to bottom)
    "a": (0.9, -1.0, "5.832 5.58 6.2 6.48 5.832 | 6.48 7.2 8 7.2 6.48 | 7.2 8 10 8 7.2 | 8 10 10 10 8 | "
                     "7.2 9 10 9 8.1"),
    "b": (0.5, -1.0, ".00195 .0039 .0078 .0156 .03125 | .00098 .00195 .0156 .03125 .0625 | "
                     ".00049 .00024 2 .0625 .125 | .00024 2 2 2 .25 | .00012 1 2 1 .5"),
    "c": (0.0, -1.0, "0 0 0 0 0 | 0 0 0 0 0 | 0 0 1 0 0 | 0 1 1 1 0 | 0 0 1 0 0"),
    "d": (0.9, -10.0, "3.4868 3.8742 4.3047 4.7830 5.3144 | 3.1381 3.4868 4.7830 5.3144 5.9049 | "
                      "2.8243 2.5419 10 5.9049 6.5610 | 2.5419 10 10 10 7.29 | 2.2877 9 10 9 8.1"),
}


def check_table(name: str, computed: torch.Tensor, book: str, *, figure: str, atol: float | None = None) -> None:
    """Compare a table with the book's, cell by cell at the book's printed precision (or atol), skipping cells
    printed '..' (not given); draw both as heat maps side by side."""
    table = parse_table(book)
    values = computed.reshape(len(table), -1)
    recording.heatmap(figure, "computed", values.tolist())
    recording.heatmap(figure, "book", [[float("nan") if x == ".." else float(x) for x in row] for row in table])
    for i, row in enumerate(table):
        for j, printed in enumerate(row):
            if printed == "..":
                continue
            if abs(float(values[i, j]) - float(printed)) > (printed_tolerance(printed) if atol is None else atol):
                raise AssertionError(f"{name}: cell ({i + 1},{j + 1}) is {float(values[i, j]):.6g}, the book "
                                     f"prints {printed}")


