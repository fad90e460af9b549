"""The document's conventions: its name in the registry, and float64 arithmetic (every operation computes in
float64 and returns the input's dtype).
"""

from __future__ import annotations

import torch

from ..validators import F64, check_tensor

DOC = "edm"


def _x(name: str, x: object) -> torch.Tensor:
    return check_tensor(name, x).to(F64)
