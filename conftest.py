"""Doctest collection over ``flowbridge/`` (``--doctest-modules``): modules that import an
optional framework at the top (a backend's prelude, the NumPyro and sbi adapters) are
left out where that framework is not installed, as the tests that need it skip.

XLA compiles for speed of compiling in the tests: ``JAX_DISABLE_MOST_OPTIMIZATIONS=1``
(JAX's own switch: LLVM at ``-O0`` without its expensive passes; XLA's HLO passes, fusion
included, still run, and XLA's CPU fast math stays off) unless the environment sets it.
The tests run thousands of small JAX programs once each, where compiling costs more than
running; on the 2-core machine the JAX rows of the conformance test take 12% less time,
``tests/test_numpyro.py`` and ``tests/test_jax.py`` 28% less, and the examples and guides,
which inherit the setting in their subprocesses, up to a quarter less
(``iaf_guides.py --fast``). ``JAX_DISABLE_MOST_OPTIMIZATIONS=0 pytest`` tests under the
full compiler.
"""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

_NEEDS = {
    "flowbridge/backends/pyro/prelude.py": ("torch", "pyro"),
    "flowbridge/backends/tfp/prelude.py": ("tensorflow", "tensorflow_probability"),
    "flowbridge/backends/jax/prelude.py": ("jax",),
    "flowbridge/numpyro.py": ("jax", "numpyro"),
    "flowbridge/sbi.py": ("torch", "pyro", "sbi"),
}

collect_ignore = [path for path, modules in _NEEDS.items()
                  if any(importlib.util.find_spec(m) is None for m in modules)]  # fmt: skip
