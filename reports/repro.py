"""The command that reproduces one test's result: built here once, for the result rows and for the report."""

from __future__ import annotations

import shlex
from collections.abc import Iterable


def repro_command(nodeid: str, *, profile: str | None = None, impl_args: Iterable[str] = (),
                  flags: Iterable[str] = (), seed: str | int | None = None, pythonpath: str | None = None) -> str:
    """``python -m pytest NODEID ...`` as it must be typed: with the PYTHONPATH that made a user's ``--impl`` module
    importable (without it the command fails with ModuleNotFoundError), the profile, the implementations and flags."""
    parts = ["python", "-m", "pytest", nodeid]
    if profile:
        parts.append(f"--hypothesis-profile={profile}")
    for value in impl_args:
        parts += ["--impl", str(value)]
    parts += list(flags)
    if seed is not None:
        parts.append(f"--hypothesis-seed={seed}")
    command = shlex.join(parts)
    return f"PYTHONPATH={shlex.quote(pythonpath)} {command}" if pythonpath else command
