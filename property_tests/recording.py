"""What a property test measured, collected while it runs and attached to its result row.

The conftest opens a Recorder around each test call; the check helpers add to it. Budgets keep the worst
example per output name and dtype (largest err / allowed), so the report shows how close the implementation came
to its budget over all the examples hypothesis tried.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eqspec.budget import BudgetCheck


@dataclass
class Recorder:
    budgets: dict[tuple[str, str], BudgetCheck] = field(default_factory=dict)
    series: list[dict] = field(default_factory=list)
    statistics: list[dict] = field(default_factory=list)
    examples: int = 0
    unsupported: int = 0  # examples the implementation refused (NotImplementedError)

    def as_dict(self) -> dict:
        budgets = [b.as_dict() for b in self.budgets.values()]
        finite = [b["ratio"] for b in budgets if b["ratio"] != float("inf")]
        metrics = {"budget": budgets, "worst_ratio": max(finite) if finite else None} if budgets else {}
        return {"metrics": metrics, "series": self.series, "statistics": self.statistics, "examples": self.examples}


_current: Recorder | None = None


def start() -> Recorder:
    global _current
    _current = Recorder()
    return _current


def stop() -> Recorder | None:
    global _current
    rec, _current = _current, None
    return rec


def current() -> Recorder:
    return _current if _current is not None else Recorder()  # outside a test: record nowhere


def budget(check: BudgetCheck) -> None:
    rec = current()
    key = (check.name, check.dtype)
    old = rec.budgets.get(key)
    if old is None or _closeness(check) > _closeness(old):
        rec.budgets[key] = check


def _closeness(check: BudgetCheck) -> float:
    return check.err / check.allowed if check.allowed > 0 else (0.0 if check.err == 0 else float("inf"))


SERIES_KINDS = ("line", "loglog", "linear", "histogram")


def series(name: str, label: str, x_label: str, y_label: str, points: list[tuple[float, float]], *,
           kind: str = "line") -> None:
    """A line in the report's figure ``name`` (one figure per name, one line per implementation and label).

    kind: "line" (log y when the values span decades, log2 x for wide positive x), "loglog" (both axes log: orders
    of convergence), "linear" (no log axes), "histogram" ((bin centre, density) pairs, drawn as steps).
    """
    if kind not in SERIES_KINDS:
        raise ValueError(f"series kind must be one of {SERIES_KINDS}, got {kind!r}")
    current().series.append({"name": name, "label": label, "x_label": x_label, "y_label": y_label,
                             "points": [list(p) for p in points], "kind": kind})


def heatmap(name: str, label: str, values: list[list[float]], *, row_labels: list[str] | None = None,
            col_labels: list[str] | None = None) -> None:
    """A table of numbers drawn as an annotated heat map; heat maps sharing ``name`` are drawn side by side
    (e.g. the computed state values beside the book's)."""
    current().series.append({"name": name, "label": label, "kind": "heatmap",
                             "values": [[float(v) for v in row] for row in values],
                             "row_labels": list(row_labels or []), "col_labels": list(col_labels or [])})


def statistic(name: str, observed: float, bound: float, false_alarm: float) -> None:
    current().statistics.append({"name": name, "observed": observed, "bound": bound, "false_alarm": false_alarm})


def example() -> None:
    if _current is not None:
        _current.examples += 1


def unsupported() -> int:
    """Count an example the implementation refused; how many it has refused while it has refused every example so
    far (0 once it supported one)."""
    rec = current()
    rec.unsupported += 1
    return rec.unsupported if rec.unsupported == rec.examples else 0
