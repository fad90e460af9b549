"""Plots for the HTML report, as inline base64 PNG <img> tags so the page needs no other file.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot state, no display needed).
Every function returns "" when there is nothing to draw or matplotlib is missing: a plot is a picture of
data the page also shows as a table, never the only place a number appears.
"""

from __future__ import annotations

import base64
import html
import io
import math

WIDTH, HEIGHT, DPI = 6.4, 3.4, 100


def _figure():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _img(fig, alt: str) -> str:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _finite_points(points) -> list[tuple[float, float]]:
    out = []
    for p in points or []:
        try:
            x, y = float(p[0]), float(p[1])
        except (TypeError, ValueError, IndexError):
            continue
        if math.isfinite(x) and math.isfinite(y):
            out.append((x, y))
    return out


def _set_log_if_positive(ax, values, axis: str) -> None:
    # Errors span decades, so log scale; a zero error (exact result) cannot go on a log axis: symlog keeps it.
    positive = [v for v in values if v > 0]
    if not positive:
        return
    if len(positive) == len(values):
        getattr(ax, f"set_{axis}scale")("log")
    elif all(v >= 0 for v in values):
        getattr(ax, f"set_{axis}scale")("symlog", linthresh=min(positive))


def series_plot(name: str, series: list[dict]) -> str:
    """One figure per series name: one line per (implementation, label); log y (errors span decades)."""
    fig = _figure()
    lines = [(s, _finite_points(s.get("points"))) for s in series]
    lines = [(s, pts) for s, pts in lines if pts]
    if fig is None or not lines:
        return ""
    ax = fig.add_subplot()
    kind = lines[0][0].get("kind") or "line"
    several_impls = len({s["implementation"] for s, _ in lines}) > 1
    ys, xs = [], []
    for s, pts in lines:
        label = str(s.get("label") or "")
        if several_impls or not label:
            label = f"{s['implementation']} {label}".strip()
        pts = sorted(pts)
        if kind == "histogram":
            ax.step([p[0] for p in pts], [p[1] for p in pts], where="mid", label=label)
        else:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=label)
        xs += [p[0] for p in pts]
        ys += [p[1] for p in pts]
    if kind == "loglog":
        _set_log_if_positive(ax, ys, "y")
        if min(xs) > 0:
            ax.set_xscale("log")
    elif kind == "line":
        _set_log_if_positive(ax, ys, "y")
        if min(xs) > 0 and max(xs) / min(xs) >= 16:  # block sizes, lengths, step counts: powers of two
            ax.set_xscale("log", base=2)
    first = lines[0][0]
    ax.set_xlabel(str(first.get("x_label") or "x"))
    ax.set_ylabel(str(first.get("y_label") or "y"))
    ax.set_title(name, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if len(lines) > 1 or lines[0][0].get("label"):
        ax.legend(fontsize=7)
    return _img(fig, f"{name}: {first.get('y_label') or 'y'} against {first.get('x_label') or 'x'}")


def heatmaps(name: str, maps: list[dict]) -> str:
    """Annotated heat maps side by side, one panel per (implementation, label), sharing one colour scale."""
    panels = [m for m in maps if m.get("values") and all(len(r) == len(m["values"][0]) for r in m["values"])]
    fig = _figure()
    if fig is None or not panels:
        return ""
    values = [v for m in panels for row in m["values"] for v in row if math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    fig.set_size_inches(min(3.2 * len(panels), 13), HEIGHT)
    several_impls = len({m["implementation"] for m in panels}) > 1
    for i, m in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        grid = m["values"]
        ax.imshow(grid, cmap="viridis", vmin=lo, vmax=hi)
        for r, row in enumerate(grid):
            for c, v in enumerate(row):
                ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=6,
                        color="white" if v < (lo + hi) / 2 else "black")
        ax.set_xticks(range(len(grid[0])), m.get("col_labels") or range(1, len(grid[0]) + 1), fontsize=6)
        ax.set_yticks(range(len(grid)), m.get("row_labels") or range(1, len(grid) + 1), fontsize=6)
        label = str(m.get("label") or "")
        ax.set_title(f"{m['implementation']} {label}".strip() if several_impls or not label else label, fontsize=8)
    fig.suptitle(name, fontsize=10)
    return _img(fig, f"{name}: heat maps")


def ratio_bars(table: dict[str, dict[str, float]], ks: list[float]) -> str:
    """Grouped bars of the worst err / err(baseline) per implementation, one bar per dtype."""
    fig = _figure()
    impls = list(table)
    dtypes = sorted({d for per in table.values() for d in per})
    values = [v for per in table.values() for v in per.values() if math.isfinite(v)]
    if fig is None or not impls or not values:
        return ""
    ax = fig.add_subplot()
    width = 0.8 / max(len(per) for per in table.values())
    top = max(values + ks + [1.0]) * 1.3
    colours = {d: f"C{j}" for j, d in enumerate(dtypes)}
    labelled: set[str] = set()
    for i, impl in enumerate(impls):
        present = [d for d in dtypes if d in table[impl]]  # centre each group on its tick, no gaps for absent dtypes
        for j, dtype in enumerate(present):
            x = i + (j - (len(present) - 1) / 2) * width
            label = None if dtype in labelled else dtype
            labelled.add(dtype)
            ax.bar(x, min(table[impl][dtype], top), width, color=colours[dtype], label=label)  # inf: full height
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--", label="naive baseline (1)")
    for k in ks:
        ax.axhline(k, color="#b00020", linewidth=0.8, linestyle=":", label=f"budget k = {k:g}")
    ax.set_xticks(range(len(impls)), impls, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("worst err / err(baseline)")
    ax.set_ylim(0, top)
    ax.set_title("error ratio against the naive same-precision baseline", fontsize=10)
    ax.legend(fontsize=7, ncols=2)
    return _img(fig, "worst error ratio per implementation and dtype")


def benchmark_plot(name: str, x_label: str, lines: dict[str, list[tuple[float, float]]], unit: str) -> str:
    """asv values against one numeric parameter, one line per machine and other parameters."""
    fig = _figure()
    lines = {k: _finite_points(v) for k, v in lines.items()}
    lines = {k: v for k, v in lines.items() if len(v) >= 2}
    if fig is None or not lines:
        return ""
    ax = fig.add_subplot()
    xs, ys = [], []
    for label, pts in lines.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=label)
        xs += [p[0] for p in pts]
        ys += [p[1] for p in pts]
    if min(xs) > 0 and max(xs) / min(xs) >= 16:
        ax.set_xscale("log", base=2)
    if min(ys) > 0 and max(ys) / min(ys) >= 100:
        ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(unit or "value")
    ax.set_title(name, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _img(fig, f"{name} against {x_label}")
