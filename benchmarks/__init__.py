"""asv benchmarks of eqspec's implementations (attention, softmax), each checked against its float64 spec.

asv imports this package by itself and, run with ``--python=same``, does not install the project: the repository
root (the folder above this one) goes on sys.path here, before any benchmark module imports specs or
implementations.
"""

import os
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
