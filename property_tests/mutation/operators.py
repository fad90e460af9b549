"""The mutation operators: small, plausible edits of one node of a spec's syntax tree.

Each operator turns one node into another, the way a hand-written kernel or loss goes wrong: an operator or a
comparison swapped, a term or factor dropped, a sign lost, a constant off by one (an index, a dimension, a
default), a reduction or a function swapped for its neighbour (sum/mean, max/min, log1p/log, softmax/
log_softmax), a call dropped (.detach(), .clamp()), float64 replaced by float32. Nodes are numbered in pre-order,
so the n-th node of a tree and of its unchanged copy are the same node.

What is never mutated: docstrings and other strings (messages, option names), decorators (the registry's
metadata), annotations, and ``raise`` statements (what an error says, not when it is raised: the comparison
that decides that is mutated).
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterator
from dataclasses import dataclass

BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult,
               ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv}
DROPPABLE_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div)  # a + b -> a: the second term or factor forgotten
COMPARE_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                 ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
# A function or method swapped for the one a hurried author reaches for instead
NAME_SWAPS = {"sum": "mean", "mean": "sum", "max": "min", "min": "max", "amax": "amin", "amin": "amax",
              "argmax": "argmin", "argmin": "argmax", "maximum": "minimum", "minimum": "maximum",
              "log1p": "log", "expm1": "exp", "logsumexp": "amax", "softmax": "log_softmax",
              "log_softmax": "softmax", "logsigmoid": "sigmoid", "floor": "ceil", "ceil": "floor",
              "cumsum": "cumprod", "float64": "float32", "double": "float", "clamp_min": "clamp_max",
              "clamp_max": "clamp_min", "triu": "tril", "tril": "triu", "all": "any", "any": "all"}
# Method calls whose removal leaves a value of the same shape: x.detach() -> x, x.clamp(...) -> x
DROPPABLE_METHODS = frozenset({"detach", "clamp", "clamp_min", "clamp_max", "abs", "sqrt", "exp", "neg", "t",
                               "contiguous", "flip", "clone"})
OPERATOR_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.FloorDiv: "//",
                    ast.Mod: "%", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
                    ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
                    ast.And: "and", ast.Or: "or"}


@dataclass(frozen=True)
class Edit:
    """One mutation of a tree: replace node number ``node`` (pre-order) by ``choice`` of its candidates."""

    node: int
    choice: int
    line: int
    operator: str  # the operator's family: binop, drop-term, compare, boolop, negation, constant, swap, drop-call
    before: str
    after: str


def _symbol(op: ast.AST) -> str:
    return OPERATOR_SYMBOLS.get(type(op), type(op).__name__)


def candidates(node: ast.AST) -> list[tuple[str, ast.AST]]:
    """Every (operator family, replacement node) for ``node``; the replacement is a fresh node."""
    out: list[tuple[str, ast.AST]] = []
    if isinstance(node, ast.BinOp):
        swapped = BINOP_SWAPS.get(type(node.op))
        if swapped is not None:
            out.append(("binop", ast.BinOp(copy.deepcopy(node.left), swapped(), copy.deepcopy(node.right))))
        if isinstance(node.op, DROPPABLE_BINOPS):
            out.append(("drop-term", copy.deepcopy(node.left)))
    elif isinstance(node, ast.AugAssign):
        swapped = BINOP_SWAPS.get(type(node.op))
        if swapped is not None:
            out.append(("binop", ast.AugAssign(copy.deepcopy(node.target), swapped(), copy.deepcopy(node.value))))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
        if not (isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)):  # -1: a constant's job
            out.append(("negation", copy.deepcopy(node.operand)))
    elif isinstance(node, ast.Compare) and len(node.ops) == 1:
        swapped = COMPARE_SWAPS.get(type(node.ops[0]))
        if swapped is not None:
            out.append(("compare", ast.Compare(copy.deepcopy(node.left), [swapped()],
                                               copy.deepcopy(node.comparators))))
    elif isinstance(node, ast.BoolOp):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        out.append(("boolop", ast.BoolOp(other, copy.deepcopy(node.values))))
    elif isinstance(node, ast.Constant) and not isinstance(node.value, (str, bytes)) and node.value is not None:
        out.extend(("constant", ast.Constant(v)) for v in _constant_variants(node.value))
    elif isinstance(node, ast.Attribute) and node.attr in NAME_SWAPS:
        out.append(("swap", ast.Attribute(copy.deepcopy(node.value), NAME_SWAPS[node.attr], node.ctx)))
    elif isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in DROPPABLE_METHODS and not node.keywords and \
                isinstance(func.value, (ast.Name, ast.Attribute, ast.Subscript, ast.Call, ast.BinOp)):
            if not (isinstance(func.value, ast.Name) and func.value.id in {"torch", "math", "F", "F_"}):
                out.append(("drop-call", copy.deepcopy(func.value)))
    return out


def _constant_variants(value) -> list:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1] if value == 0 else [value + 1, value - 1]
    if isinstance(value, float):
        return [1.0] if value == 0 else [2 * value]
    return []


def _describe(node: ast.AST, replacement: ast.AST) -> tuple[str, str]:
    return ast.unparse(node), ast.unparse(replacement)


def _children(node: ast.AST) -> Iterator[ast.AST]:
    """The child nodes to visit: decorators, annotations and default-less parts of signatures left out."""
    for name, value in ast.iter_fields(node):
        if name in {"decorator_list", "returns", "annotation", "type_comment"}:
            continue
        if isinstance(value, list):
            yield from (v for v in value if isinstance(v, ast.AST))
        elif isinstance(value, ast.AST):
            yield value


def _walk(node: ast.AST, skip) -> Iterator[ast.AST]:
    """Pre-order, minus the subtrees ``skip`` rejects (docstrings, raise, f-strings)."""
    if skip(node):
        return
    yield node
    for child in _children(node):
        yield from _walk(child, skip)


def walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``node``'s code, pre-order, decorators and annotations left out."""
    return _walk(node, lambda _: False)


def _skip(node: ast.AST) -> bool:
    return isinstance(node, (ast.Raise, ast.JoinedStr)) or (
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str))


def edits(tree: ast.AST) -> list[Edit]:
    """Every mutation of ``tree`` (usually one top-level statement), in a stable order."""
    found, nodes = [], list(_walk(tree, _skip))
    parents = {id(child): node for node in nodes for child in _children(node)}
    for number, node in enumerate(nodes):
        for choice, (family, replacement) in enumerate(candidates(node)):
            before, after = _describe(node, replacement)
            if isinstance(node, ast.Constant):  # "1 -> 0" says nothing: show the expression around it
                before, after = _in_context(parents.get(id(node)), node, replacement, before, after)
            found.append(Edit(number, choice, getattr(node, "lineno", 0), family, before, after))
    return found


def _in_context(parent: ast.AST | None, node: ast.AST, replacement: ast.AST, before: str, after: str):
    if parent is None or isinstance(parent, (ast.stmt, ast.arguments)):
        return before, after
    copied = copy.deepcopy(parent)
    for name, value in ast.iter_fields(parent):
        if value is node:
            setattr(copied, name, replacement)
        elif isinstance(value, list) and any(v is node for v in value):
            getattr(copied, name)[next(i for i, v in enumerate(value) if v is node)] = replacement
    return ast.unparse(parent), ast.unparse(copied)


def apply(tree: ast.AST, edit: Edit) -> ast.AST:
    """A copy of ``tree`` with ``edit`` made (``tree`` is unchanged)."""
    mutated = copy.deepcopy(tree)
    nodes = list(_walk(mutated, _skip))
    target = nodes[edit.node]
    family, replacement = candidates(target)[edit.choice]
    ast.copy_location(replacement, target)
    for parent in nodes:
        for name, value in ast.iter_fields(parent):
            if value is target:
                setattr(parent, name, replacement)
                return ast.fix_missing_locations(mutated)
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is target:
                        value[i] = replacement
                        return ast.fix_missing_locations(mutated)
    if mutated is target:
        return ast.fix_missing_locations(replacement)
    raise LookupError(f"node {edit.node} has no parent in the tree")
