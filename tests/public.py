"""Each backend's public calls, one builder a backend: the tests that run a flow through
its framework's own API (its door checks included) take them from here. A backend
without a builder is a KeyError, never a fall-through to another backend's flow
(``test_backends`` checks every backend has one)."""

from __future__ import annotations

import contextlib

import pytest

import flowbridge as fb


def _numpy(spec, params):
    flow = fb.to_numpy(spec, params)
    return flow.forward, flow.inverse, flow.forward_log_det_jacobian


def _pyro(spec, params):
    torch = pytest.importorskip("torch")
    flow = fb.to_pyro(spec, params, dtype="float64")
    t = torch.as_tensor
    return (lambda x: flow(t(x)).detach(), lambda y: flow.inv(t(y)).detach(),
            lambda x: flow.log_abs_det_jacobian(t(x), flow(t(x))).detach())  # fmt: skip


def _tfp(spec, params):
    pytest.importorskip("tensorflow_probability")
    flow = fb.to_tfp(spec, params, dtype="float64")
    return flow.forward, flow.inverse, lambda x: flow.forward_log_det_jacobian(x, event_ndims=1)


def _jax(spec, params):
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        flow = fb.to_jax(spec, params, dtype="float64")

    def in_x64(fn):
        def call(value):
            with jax.enable_x64(True):
                return fn(value)

        return call

    return in_x64(flow.forward), in_x64(flow.inverse), in_x64(flow.forward_log_det_jacobian)


#: backend name -> (spec, params) -> (forward, inverse, forward log-det), float64 flows
#: called through their framework's public API with the inputs given as they are.
BUILDERS = {"numpy": _numpy, "pyro": _pyro, "tfp": _tfp, "jax": _jax}


def public_calls(backend: str, spec, params) -> tuple:
    """(forward, inverse, forward log-det) of ``backend``'s float64 flow."""
    return BUILDERS[backend](spec, params)


def x64(backend: str):
    """JAX's 64-bit mode for the jax backend's float64 calls; nothing for the others."""
    if backend == "jax":
        return pytest.importorskip("jax").enable_x64(True)
    return contextlib.nullcontext()
