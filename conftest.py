"""Doctest collection over ``flowbridge/`` (``--doctest-modules``): modules that import an
optional framework at the top (a backend's prelude, the NumPyro and sbi adapters) are
left out where that framework is not installed, as the tests that need it skip."""

from __future__ import annotations

import importlib.util

_NEEDS = {
    "flowbridge/backends/pyro/prelude.py": ("torch", "pyro"),
    "flowbridge/backends/tfp/prelude.py": ("tensorflow", "tensorflow_probability"),
    "flowbridge/backends/jax/prelude.py": ("jax",),
    "flowbridge/numpyro.py": ("jax", "numpyro"),
    "flowbridge/sbi.py": ("torch", "pyro", "sbi"),
}

collect_ignore = [path for path, modules in _NEEDS.items()
                  if any(importlib.util.find_spec(m) is None for m in modules)]  # fmt: skip
