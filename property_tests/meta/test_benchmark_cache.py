"""The GPU benchmarks measure every combination once (benchmarks.common.measure_grid) and report per combination:
a skip stays a skip, a failure stays a failure, and one failing combination loses none of the others."""

from __future__ import annotations

import pytest

from benchmarks.common import cached_entry, cached_metric, measure_grid


def _measure(name, size):
    if name == "missing":
        raise NotImplementedError("missing: not installed here")
    if name == "wrong" and size == 2:
        raise AssertionError("wrong (bfloat16, cuda): o: err 1.0 > allowed 0.01")
    return {"ms": float(size), "tflops": 10.0 * size}


def test_every_combination_keeps_its_result():
    cache = measure_grid((("good", "wrong", "missing"), (1, 2)), _measure, cuda=True)
    assert cached_metric(cached_entry(cache, ("good", 2)), "tflops") == 20.0
    assert cached_metric(cached_entry(cache, ("wrong", 1)), "ms") == 1.0
    with pytest.raises(RuntimeError, match="err 1.0 > allowed"):
        cached_metric(cached_entry(cache, ("wrong", 2)), "ms")
    with pytest.raises(NotImplementedError, match="not installed"):
        cached_entry(cache, ("missing", 1))


def test_without_a_gpu_every_combination_is_skipped():
    cache = measure_grid((("good",), (1,)), _measure, cuda=False)
    with pytest.raises(NotImplementedError, match="no CUDA"):
        cached_entry(cache, ("good", 1))
