"""The spec's results at the last few drawn points, for the next implementation that meets the same point.

Derandomized examples repeat across implementations (every mutant of an operation sees the same first points), and
what the spec computes at a point (its rounded runs, its verdicts on corrupted inputs) depends on the point only.
"""

from __future__ import annotations

from collections import OrderedDict


class KeptLast:
    """A mapping that keeps the values of its ``n`` most recently used keys (the oldest is dropped)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._kept: OrderedDict = OrderedDict()

    def get(self, key):
        """The value kept for ``key``, or None (None too for a key that cannot be hashed: never kept)."""
        try:
            value = self._kept.get(key)
        except TypeError:
            return None
        if value is not None:
            self._kept.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        try:
            self._kept[key] = value
        except TypeError:  # an unhashable value among the drawn ones: not kept
            return
        if len(self._kept) > self.n:
            self._kept.popitem(last=False)
