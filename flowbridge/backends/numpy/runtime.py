"""Drive the generated NumPy reference from flowbridge (float64, CPU only).

NumPy has no autodiff, so the reference's Jacobian is taken by central finite
differences (step 1e-6), an independent check of its log-dets.
"""

from __future__ import annotations

import numpy as np

from ..common import set_training

STEP = 1e-6


def prepare() -> None:
    """Nothing to set up: NumPy is a core dependency."""


def layers_of(flow) -> list:
    """The layers of a flow in application order (one layer: itself)."""
    return list(flow.layers) if hasattr(flow, "layers") else [flow]


def devices() -> list[str]:
    return ["cpu"]


def unavailable_devices() -> dict[str, str]:
    return {"cuda": "the NumPy reference runs on the CPU only"}


def precise() -> None:
    pass


def make(module, params):
    """The flow of the loaded generated ``module`` with checked neutral ``params``
    (None: the module's own initial weights)."""
    return module.build_flow(params)


def saved(module, flow) -> dict:
    """What a pickled flow keeps beside its spec: its weights and batch-norm state, and
    each layer's training mode."""
    params = {k: np.array(v) for k, v in module.neutral_params(flow).items()}
    return {"params": params, "training": [getattr(x, "training", None) for x in layers_of(flow)]}


def restored(module, params, state: dict):
    """The flow of a pickled ``state`` with its checked ``params``
    (:func:`flowbridge.persist.rebuild`)."""
    flow = make(module, params)
    for layer, training in zip(layers_of(flow), state["training"], strict=True):
        if training is not None:
            layer.training = training
    return flow


def build(module, params, dtype: str, device: str):
    """The reference in evaluation mode (a batch norm uses its running averages)."""
    flow = make(module, params)
    set_training(layers_of(flow), False)
    return flow


def training(flow):
    """``flow`` with its batch norms in training mode (batch statistics)."""
    set_training(layers_of(flow), True)
    return flow


def _given(context) -> tuple:
    return () if context is None else (np.array(context, dtype=np.float64),)


def forward(flow, x: np.ndarray, context: np.ndarray | None = None):
    return flow.forward_with_log_det(np.array(x, dtype=np.float64), *_given(context))


def inverse(flow, y: np.ndarray, context: np.ndarray | None = None):
    return flow.inverse_with_log_det(np.array(y, dtype=np.float64), *_given(context))


def round_trip(flow, x: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    return flow.inverse(flow.forward(x, *_given(context)), *_given(context))


def jacobian_log_det(flow, x: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    n, event = len(x), x.shape[1:]
    d = x[0].size
    eye = (np.eye(d) * STEP).reshape(d, *event)
    # (n, d, *event): rows perturbed one coordinate at a time; jac[k, :, i] = dy/dx_i;
    # each row keeps its own context
    given = () if context is None else (np.array(context, dtype=np.float64)[:, None, :],)
    plus = flow.forward(x[:, None] + eye, *given).reshape(n, d, -1)
    minus = flow.forward(x[:, None] - eye, *given).reshape(n, d, -1)
    jac = np.swapaxes((plus - minus) / (2 * STEP), 1, 2)
    return np.linalg.slogdet(jac)[1]
