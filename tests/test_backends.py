"""The backend registry (:mod:`flowbridge.backends`) and what every backend's generated
flow does alike: its own initial weights, inputs checked at the door, the exact clamp."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import backends as B
from flowbridge import ir, layers

from .cases import D7
from .public import BUILDERS, public_calls

PACKAGE = Path(fb.__file__).parent


def _forward_fns(backend, spec, params):
    """(forward, inverse, fldj) of ``backend``'s float64 flow through its public API."""
    return public_calls(backend, spec, params)


# ------------------------------------------------------------------ one registry
#: Modules that once listed backends or branched on a backend's name. They may still
#: name one backend in a function made for it (``to_pyro``), never compare a name or
#: list several: the registry is the one list.
READERS = ["codegen.py", "check.py", "build.py", "params.py", "cli.py", "ir.py", "splines.py",
           *(f"layers/{p.name}" for p in sorted((PACKAGE / "layers").glob("*.py")))]


@pytest.mark.parametrize("module", READERS)
def test_no_module_outside_the_registry_lists_backends_or_branches_on_one(module):
    text = (PACKAGE / module).read_text()
    name = rf"""["']({"|".join(B.NAMES)})["']"""
    patterns = [rf"[=!]=\s*{name}", rf"{name}\s*[=!]=", rf"{name}\s*,\s*{name}",
                rf"\bin\s*[(\[{{]\s*{name}", rf"startswith\(\s*{name}", rf"{name}\s*:"]  # fmt: skip
    for pattern in patterns:
        assert not re.search(pattern, text), (module, pattern)


def test_the_registry_declares_every_backend_folder():
    folders = {p.name for p in (PACKAGE / "backends").iterdir() if (p / "emit.py").exists()}
    assert folders == set(B.NAMES)
    for backend in B.BACKENDS.values():
        assert backend.emitter().OPS.keys() == ir.OPS.keys()
        if backend.available():
            runtime = backend.runtime()
            for function in ("prepare", "layers_of", "devices", "unavailable_devices", "build",
                             "forward", "inverse", "round_trip", "jacobian_log_det"):  # fmt: skip
                assert callable(getattr(runtime, function)), (backend.name, function)
    assert [b.name for b in B.BACKENDS.values() if b.reference] == [B.REFERENCE] == ["numpy"]


def test_every_backend_has_its_own_public_calls_in_the_tests():
    """The tests' builders of public calls name every backend, so no backend's row
    falls through to another backend's flow."""
    assert BUILDERS.keys() == set(B.NAMES)


# ------------------------------------------------------------------ initial weights
@pytest.mark.parametrize("backend", B.NAMES)
def test_generated_modules_start_each_weight_by_its_stated_rule(backend):
    """Every weight the generated module draws itself lies within its bound, is zero
    exactly where the bound is 0, and spreads over its bound where it is not."""
    B.get(backend).require()
    spec = fb.realnvp(6, hidden=(32, 32), permutation="random")
    params = layers.param_specs(spec)
    builders = {
        "numpy": lambda: sys.modules[type(f := fb.to_numpy(spec)).__module__].neutral_params(f),
        "pyro": lambda: fb.params_from_pyro(fb.to_pyro(spec)),
        "tfp": lambda: fb.params_from_tfp(fb.to_tfp(spec)),
        "jax": lambda: fb.params_from_jax(fb.to_jax(spec)),
    }
    values = builders[backend]()
    assert values.keys() == params.keys()
    for name, p in params.items():
        v = np.abs(np.asarray(values[name], dtype=np.float64))
        if p.init.bound == 0.0:
            assert not v.any(), name
        else:
            assert v.max() <= p.init.bound and v.max() > 0.5 * p.init.bound, name


# ------------------------------------------------------------------ inputs at the door
@pytest.mark.parametrize("backend", B.NAMES)
@pytest.mark.parametrize("shape", [(2, 9), (2, 3), (7, 2), ()])
def test_an_input_of_the_wrong_event_size_is_refused_naming_the_expected_shape(backend, shape):
    fns = _forward_fns(backend, D7, fb.init_params(D7, 0, init="random"))
    for fn in fns:
        with pytest.raises(ValueError, match=r"expected shape \(\*batch, 7\), got"):
            fn(np.zeros(shape))


@pytest.mark.parametrize("backend", B.NAMES)
def test_complex_inputs_are_refused_not_truncated(backend):
    fns = _forward_fns(backend, D7, fb.init_params(D7, 0, init="random"))
    x = np.ones((2, 7)) + 1j
    if backend == "pyro":
        import torch

        x = torch.as_tensor(x)
    for fn in fns:
        with pytest.raises(TypeError, match="expected (real numbers|a real floating-point)"):
            fn(x)


# ------------------------------------------------------------------ the clamp is a clamp
@pytest.mark.parametrize("backend", B.NAMES)
def test_clamp_is_exact_for_huge_raw_values(backend):
    """``clamp(1e20)`` is the bound exactly (Pyro's own ``s + (clamp(s) - s)`` gives 0)."""
    spec = fb.FlowSpec(event_shape=(2,), layers=[fb.AffineCoupling(
        conditioner=fb.Conditioner(hidden=()), scale=fb.ClampScale(low=-5.0, high=3.0))])  # fmt: skip
    params = {"layers.0.conditioner.0.kernel": np.array([[0.0, 1e20]]),
              "layers.0.conditioner.0.bias": np.array([0.0, 0.0])}
    fldj = _forward_fns(backend, spec, params)[2]
    x = np.array([[1.0, 1.0], [-1.0, 1.0]])
    np.testing.assert_array_equal(np.asarray(fldj(x), dtype=float), [3.0, -5.0])
