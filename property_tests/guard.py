"""Calling an implementation so that a broken one is reported, never crashes or stalls the run.

``call`` turns whatever goes wrong into one of three exceptions the report can name (a NotImplementedError - the
implementation's own word that it does not support an option - skips the test with its message): ImplementationError (it
raised, or could not be imported), ImplementationTimeout (it ran past the deadline; it is then never called
again in this run, so hypothesis' shrinking does not wait on it over and over), and the operation's
ContractViolation (wrong structure, shape, dtype or device of the result). Numerical judgement is left to the
property tests.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

import pytest

from eqspec import outputs
from eqspec.registry import REGISTRY, Implementation

DEFAULT_TIMEOUT_S = float(os.environ.get("EQSPEC_IMPL_TIMEOUT", "120"))


class ImplementationError(Exception):
    """The implementation raised, or could not be loaded."""


class ImplementationTimeout(ImplementationError):
    """The implementation did not return within the deadline."""


_hung: dict[tuple[str, str], str] = {}
# The last NotImplementedError message of each implementation (a differential test that it supported at no drawn
# point is skipped with it)
UNSUPPORTED: dict[str, str] = {}
_timeout_s = DEFAULT_TIMEOUT_S


def set_timeout(seconds: float) -> None:
    global _timeout_s
    _timeout_s = float(seconds)


@contextmanager
def deadline(seconds: float):
    """Raise ImplementationTimeout in the main thread after ``seconds`` (SIGALRM; elsewhere no deadline)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise ImplementationTimeout(f"did not return within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def load(impl: Implementation):
    try:
        return impl.load()
    except Exception as exc:  # an unimportable user module is a failure of that implementation, not of the run
        raise ImplementationError(f"{impl.name} could not be loaded from {impl.target!r}: "
                                  f"{type(exc).__name__}: {exc}") from exc


def call(impl: Implementation, *args, **kwargs):
    """Call ``impl`` and check its result against the operation's output contract."""
    fn = load(impl)
    key = (impl.operation, impl.name)
    try:
        if key in _hung:
            raise ImplementationTimeout(_hung[key])
        with deadline(_timeout_s):
            result = fn(*args, **kwargs)
    except NotImplementedError as exc:  # the implementation's own word that it does not support this input
        UNSUPPORTED[impl.name] = f"unsupported by {impl.name}: {exc}"
        pytest.skip(UNSUPPORTED[impl.name])
    except ImplementationTimeout as exc:
        _hung.setdefault(key, f"{impl.name} {exc}; not called again in this run")
        raise ImplementationTimeout(_hung[key]) from None
    except Exception as exc:
        raise ImplementationError(f"{impl.name} raised {type(exc).__name__}: {exc}") from exc
    op = REGISTRY.operations[impl.operation]
    if op.outputs:
        outputs.check(op.id, op.outputs, result, outputs.bind(op.reference, args, kwargs), provides=impl.provides,
                      extra_dtypes=impl.output_dtypes)
    return result
