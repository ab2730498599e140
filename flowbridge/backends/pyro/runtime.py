"""Drive a generated Pyro flow from flowbridge: devices, fresh tensors, autodiff Jacobians.

Every call makes new tensors, so Pyro's identity-keyed caches never answer for the math.
"""

from __future__ import annotations

import numpy as np


def prepare() -> None:
    """Import Pyro keeping torch's global ``Distribution`` validation default as it was:
    Pyro's first import resets it (to ``__debug__``), and a program that set it (sbi
    switches it off) must not see flowbridge change it. A program that imported Pyro
    itself has Pyro's setting already."""
    import sys

    if "pyro.distributions" in sys.modules:
        return
    import torch

    before = torch.distributions.Distribution._validate_args
    import pyro.distributions  # noqa: F401

    torch.distributions.Distribution.set_default_validate_args(before)


def layers_of(flow) -> list:
    """The layers of a flow in application order (a list of layers, or one layer)."""
    if hasattr(flow, "parts"):
        return list(flow.parts)
    if hasattr(flow, "embedding") and hasattr(flow, "layers"):  # behind a context embedding
        return list(flow.layers)
    if hasattr(flow, "condition") and hasattr(flow, "transforms"):  # a conditional flow
        return list(flow)
    return list(flow) if isinstance(flow, (list, tuple)) else [flow]


def devices() -> list[str]:
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def unavailable_devices() -> dict[str, str]:
    """Devices that are skipped, with the reason."""
    import torch

    return {} if torch.cuda.is_available() else {"cuda": "torch sees no CUDA device"}


def precise() -> None:
    """TF32 off, so float32 matmuls on Ampere+ GPUs are true float32."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def make(module, params, dtype=None, device=None, validate_args=False):
    """The flow of the loaded generated ``module`` in ``dtype`` (default: torch's default
    dtype) on ``device``, with checked neutral ``params`` copied in after the move (so
    float64 parameters stay exact in a float64 flow); None keeps the module's own
    initial weights. ``validate_args``: inputs checked against the layers' domains."""
    import torch

    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    flow = module.build_flow(validate_args=validate_args)
    flow = flow.to(device=device, dtype=dtype or torch.get_default_dtype())
    return module.load_neutral_params(flow, params) if params is not None else flow


def saved(module, flow) -> dict:
    """What a pickled flow keeps beside its spec: its weights and batch-norm state as
    detached tensors on their device (so ``torch.load``'s ``map_location`` moves them),
    ``make``'s options (dtype, validate_args) and the training mode."""
    params = {k: v.detach().clone() for k, v in module.neutral_params(flow).items()}
    first = next(iter(params.values()), None)
    dtype = None if first is None else str(first.dtype).removeprefix("torch.")
    validate = bool(getattr(flow, "validate_args", False))
    return {"params": params, "options": {"dtype": dtype, "validate_args": validate},
            "training": bool(flow.training)}  # fmt: skip


def restored(module, params, state: dict):
    """The flow of a pickled ``state`` with its checked ``params``
    (:func:`flowbridge.persist.rebuild`), on the device its weights were loaded to."""
    saved = state["params"]
    device = next(iter(saved.values())).device if saved else None
    flow = make(module, params, device=device, **state["options"])
    return flow.train(state["training"])


def build(module, params, dtype: str, device: str):
    import torch

    precise()
    flow = make(module, params, dtype, device).eval()  # batch norm: evaluation
    flow._flowbridge_tensor = {"dtype": getattr(torch, dtype), "device": device}
    return flow


def training(flow):
    """``flow`` in training mode (a batch norm's batch statistics)."""
    return flow.train()


def _tensor(flow, a: np.ndarray):
    import torch

    return torch.tensor(np.array(a), **flow._flowbridge_tensor)


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _at(flow, context):
    """The flow itself, or a conditional flow at ``context`` (a fresh tensor)."""
    return flow if context is None else flow.condition(_tensor(flow, context))


def forward(flow, x: np.ndarray, context: np.ndarray | None = None):
    """(y, log|det J|) through the public API: ``flow(x)`` and ``log_abs_det_jacobian``
    (of ``flow.condition(context)`` for a conditional flow)."""
    import torch

    with torch.no_grad():
        at, xt = _at(flow, context), _tensor(flow, x)
        yt = at(xt)
        return _numpy(yt), _numpy(at.log_abs_det_jacobian(xt, yt))


def inverse(flow, y: np.ndarray, context: np.ndarray | None = None):
    """(x, log|det dx/dy|) through ``flow.inv`` on a fresh tensor."""
    import torch

    with torch.no_grad():
        at, yt = _at(flow, context), _tensor(flow, y)
        xt = at.inv(yt)
        return _numpy(xt), -_numpy(at.log_abs_det_jacobian(xt, yt))


def round_trip(flow, x: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    """inverse(forward(x)), the intermediate cloned so no cache is hit."""
    import torch

    with torch.no_grad():
        at = _at(flow, context)
        y = at(_tensor(flow, x)).clone()
        return _numpy(at.inv(y))


def jacobian_log_det(flow, x: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    """log|det| of the autodiff Jacobian of ``flow`` at each row of ``x`` (n, *event) (at
    that row's context)."""
    import torch

    out = []
    for k, row in enumerate(x):
        at = _at(flow, None if context is None else context[k])
        jac = torch.autograd.functional.jacobian(lambda v, at=at: at(v), _tensor(flow, row))
        square = jac.reshape(jac.numel() // row.size, row.size)  # (*out, *in) -> (D, D)
        out.append(torch.linalg.slogdet(square.double().cpu())[1].item())
    return np.array(out)
