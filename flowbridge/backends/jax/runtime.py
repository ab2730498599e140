"""Drive a generated JAX flow from flowbridge: dtypes, devices, autodiff Jacobians.

JAX computes in float64 only in its 64-bit mode, a process-wide switch that flowbridge
never turns on for the user's program: the conformance check runs each float64 call
inside ``jax.enable_x64(True)`` and each float32 call with the mode off, JAX's default,
as a user's program has it. Jacobians come from ``jax.jacfwd``, one row at a time under
``jax.vmap``.
"""

from __future__ import annotations

import os

import numpy as np


def prepare() -> None:
    """Nothing to set up: JAX imports quietly."""


def layers_of(flow) -> list:
    """The layers of a flow in application order (one layer: itself)."""
    flow = getattr(flow, "flow", flow)  # a training-mode view
    return list(flow.layers) if hasattr(flow, "layers") else [flow]


def _start_error() -> str | None:
    """Why JAX cannot start here (``JAX_PLATFORMS`` naming a platform this machine lacks,
    say), or None. JAX raises a bare AssertionError or a RuntimeError for these."""
    import jax

    try:
        jax.devices()
    except Exception as error:  # noqa: BLE001 (whatever JAX raises, the row is skipped)
        said = str(error).split(" (set JAX_PLATFORMS")[0] or "no backend starts"
        platforms = os.environ.get("JAX_PLATFORMS", "")
        return f"jax cannot start with JAX_PLATFORMS={platforms!r}: {said}"
    return None


def _gpus() -> list:
    import jax

    if _start_error() is not None:
        return []
    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU backend in this jaxlib, or no device
        return []


def devices() -> list[str]:
    if _start_error() is not None:
        return []
    return ["cpu"] + (["cuda"] if _gpus() else [])


def unavailable_devices() -> dict[str, str]:
    why = _start_error()
    if why is not None:
        return {"cpu": why, "cuda": why}
    return {} if _gpus() else {"cuda": "jax sees no GPU"}


def precise() -> None:
    """Nothing to switch: the generated matmuls and convolutions ask for full precision
    (``jax.lax.Precision.HIGHEST``) themselves, so float32 on a GPU is never TF32."""


def _mode(dtype):
    """JAX's 64-bit mode on for a float64 flow, off (JAX's default) for a float32 one."""
    import jax

    return jax.enable_x64(np.dtype(dtype) == np.float64)


def is_traced(value) -> bool:
    """Whether ``value`` is a JAX tracer (its contents unknown: inside ``jax.jit``)."""
    import jax

    return isinstance(value, jax.core.Tracer)


def traced(params) -> bool:
    """Whether any of ``params`` is a JAX tracer: the flow is built inside ``jax.jit``,
    and those values can have their dtypes and shapes checked, not their contents
    (:func:`flowbridge.check_params`' ``traced``)."""
    return any(is_traced(v) for v in params.values()) if hasattr(params, "values") else False


def make(module, params, dtype="float32", validate_args=False):
    """The flow of the loaded generated ``module`` in ``dtype`` with checked neutral
    ``params`` (None: the module's own initial weights); ``validate_args``: inputs checked
    against the layers' domains (eagerly)."""
    flow = module.build_flow(params, dtype=dtype)
    if validate_args:
        for layer in [flow, *layers_of(flow)]:  # before the flow first packs its layers
            layer.validate_args = True
    return flow


def saved(module, flow) -> dict:
    """What a pickled flow keeps beside its spec: its weights as NumPy arrays, its dtype
    and ``validate_args`` (a float64 flow loads where JAX's 64-bit mode is on, as
    :func:`flowbridge.to_jax` builds one)."""
    params = {k: np.array(v) for k, v in module.neutral_params(flow).items()}
    validate = bool(getattr(flow, "validate_args", False))
    return {"params": params,
            "options": {"dtype": np.dtype(flow.dtype).name, "validate_args": validate}}  # fmt: skip


def restored(module, params, state: dict):
    """The flow of a pickled ``state`` with its checked ``params``
    (:func:`flowbridge.persist.rebuild`); a float64 one where JAX's 64-bit mode is on,
    as ``fb.to_jax`` builds one."""
    return make(module, params, **state["options"])


def build(module, params, dtype: str, device: str):
    """The flow on ``device`` (its weights put there), for the conformance check."""
    import jax

    with _mode(dtype):
        flow = make(module, params, dtype)
        target = _gpus()[0] if device == "cuda" else jax.devices("cpu")[0]
        flow = jax.device_put(flow, target)
    flow._flowbridge_device = target
    return flow


class _Training:
    """A flow's training-mode view: its forward is the batch-statistics one (the new
    running averages it returns are dropped: the check compares outputs)."""

    def __init__(self, flow):
        self.flow, self.dtype = flow, flow.dtype
        self._flowbridge_device = getattr(flow, "_flowbridge_device", None)

    def forward_with_log_det(self, x, *context):
        return self.flow.forward_training(x, *context)[:2]


def training(flow):
    """``flow``'s training-mode view (a batch norm's batch statistics)."""
    return _Training(flow)


def _array(flow, a):
    """A fresh JAX array of ``a`` in the flow's dtype on its device."""
    import jax
    import jax.numpy as jnp

    return jax.device_put(jnp.asarray(np.array(a), flow.dtype), flow._flowbridge_device)


def _given(flow, context) -> tuple:
    return () if context is None else (_array(flow, context),)


def forward(flow, x: np.ndarray, context: np.ndarray | None = None):
    with _mode(flow.dtype):
        y, ld = flow.forward_with_log_det(_array(flow, x), *_given(flow, context))
        return np.asarray(y, np.float64), np.asarray(ld, np.float64)


def inverse(flow, y: np.ndarray, context: np.ndarray | None = None):
    with _mode(flow.dtype):
        x, ld = flow.inverse_with_log_det(_array(flow, y), *_given(flow, context))
        return np.asarray(x, np.float64), np.asarray(ld, np.float64)


def round_trip(flow, x: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    with _mode(flow.dtype):
        given = _given(flow, context)
        return np.asarray(flow.inverse(flow.forward(_array(flow, x), *given), *given), np.float64)


def jacobian_log_det(flow, x: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    """log|det| of the forward's Jacobian at each row of ``x``, by ``jax.jacfwd``, jitted:
    compiled once, it takes a fraction of the time op by op does on the spline and image
    flows, and it checks the traced path (the scan over repeated layers) where
    ``forward`` checks the eager one."""
    import jax

    with _mode(flow.dtype):
        if context is None:
            jac_fn = jax.jit(jax.vmap(jax.jacfwd(lambda xi: flow.forward(xi[None])[0])))
            rows = jac_fn(_array(flow, x))
        else:
            jac_fn = jax.jit(jax.vmap(jax.jacfwd(lambda xi, ci: flow.forward(xi[None], ci[None])[0])))
            rows = jac_fn(_array(flow, x), _array(flow, context))
        jac = np.asarray(rows, np.float64)
    n, d = len(x), x[0].size  # (n, *out, *in) -> (n, D, D)
    return np.linalg.slogdet(jac.reshape(n, jac[0].size // d, d))[1]
