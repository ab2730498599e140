"""Build flows in-process from the same generated code that ``flowbridge generate`` writes."""

from __future__ import annotations

import types
from typing import Any

from . import backends, codegen
from .errors import SpecError
from .layers import param_specs, plan_flow
from .params import check_params
from .spec import FlowSpec


def available(backend: str) -> bool:
    """Whether ``backend``'s frameworks are installed (imports nothing)."""
    return backends.get(backend).available()


def require(backend: str) -> None:
    """Raise :class:`~flowbridge.errors.BackendUnavailable` unless ``backend`` runs here."""
    backends.get(backend).runtime()


def _spec(spec: Any) -> FlowSpec:
    if isinstance(spec, FlowSpec):
        return spec
    if isinstance(spec, dict):
        return FlowSpec.from_dict(spec)
    raise SpecError(f"spec: expected a FlowSpec or a dict, got {type(spec).__name__}")


def generate(spec: FlowSpec | dict, backend: str) -> str:
    """The standalone module source for ``spec`` and ``backend`` (pyro, tfp, numpy)."""
    return codegen.generate(_spec(spec), backend)


def module_for(spec: FlowSpec | dict, backend: str) -> types.ModuleType:
    """The generated module for ``spec``, executed in this process. The module cache is
    consulted first, by spec hash and backend: a spec already loaded is neither planned
    nor generated again."""
    spec = _spec(spec)
    require(backend)
    return codegen.loaded(backend, spec.hash) or codegen.load(
        codegen.generate(spec, backend), backend, spec.hash
    )


def _bool(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")


def _prepared(spec: FlowSpec, params: Any, backend: str) -> tuple[types.ModuleType, dict | None]:
    """The loaded module of ``spec`` and ``params`` checked against it (None: none
    given), in one pass: a cached module is used as it is (``params`` checked against
    its PARAM_SHAPES); else the flow is planned once, ``params`` are checked against the
    plans' shapes before any framework is imported, and the plans are handed on to code
    generation."""
    require(backend)
    module = codegen.loaded(backend, spec.hash)
    if module is not None:
        checked = None if params is None else check_params(spec, params, module.PARAM_SHAPES)
        return module, checked
    plans = plan_flow(spec)
    shapes = {name: p.shape for name, p in param_specs(spec, plans).items()}
    checked = None if params is None else check_params(spec, params, shapes)
    return codegen.load(codegen.generate(spec, backend, plans), backend, spec.hash), checked


def to_pyro(
    spec: FlowSpec | dict,
    params: Any = None,
    *,
    dtype: Any = None,
    device: Any = None,
    validate_args: bool = False,
):
    """The flow as a generated Pyro ``Flow``: a ``ComposeTransformModule`` of generated
    ``TransformModule``s that runs them in one call (``flow[i]`` is layer ``i``); a
    conditional flow is a generated ``ConditionalFlow``, a
    ``ConditionalComposeTransformModule`` likewise.

    ``params``: neutral parameters (:func:`flowbridge.init_params`); ``None`` keeps the
    generated module's own identity-at-init weights. ``dtype`` (default: torch's default
    dtype) and ``device`` are applied before the parameters are copied in, so float64
    parameters stay exact in a float64 flow. Move it later with ``.to(device, dtype)``.

    ``validate_args=True`` checks every input against the layers' domains (the data in
    [0, 1] a logit preprocessing reads: a ValueError names the layer and the interval),
    as TFP's ``validate_args``; off by default, so the default path pays nothing. This
    is flowbridge's switch: torch's ``Distribution`` validation (on by default) checks a
    TransformedDistribution's ``log_prob`` argument against the flow's ``domain``, never
    the flow's own calls.
    """
    spec = _spec(spec)
    _bool(validate_args, "validate_args")
    module, checked = _prepared(spec, params, "pyro")
    return backends.get("pyro").runtime().make(module, checked, dtype, device, validate_args)


def to_tfp(
    spec: FlowSpec | dict,
    params: Any = None,
    *,
    dtype: Any = "float32",
    data_format: str = "channels_last",
    validate_args: bool = False,
):
    """The flow as a TFP ``Chain`` of generated ``Bijector``s (``dtype`` float32/float64).

    An image flow takes ``(*batch, H, W, C)`` (``data_format="channels_last"``, TF's
    own layout, the default) or ``(*batch, C, H, W)`` (``"channels_first"``); its layers
    compute channels first (the neutral layout), behind a ``tfb.Transpose`` at each end
    of the chain for channels-last data. ``data_format`` means nothing for vector flows.

    ``validate_args``: TFP's switch, given to every layer and the chain; on, inputs are
    checked against the layers' domains (the data in [0, 1] a logit preprocessing reads)
    with ``tf.debugging`` assertions, which hold inside ``tf.function`` too.
    """
    spec = _spec(spec)
    if str(dtype) not in ("float32", "float64", "<dtype: 'float32'>", "<dtype: 'float64'>"):
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"data_format: expected 'channels_last' or 'channels_first', got "
                         f"{data_format!r}")  # fmt: skip
    _bool(validate_args, "validate_args")
    module, checked = _prepared(spec, params, "tfp")
    return backends.get("tfp").runtime().make(module, checked, dtype, data_format, validate_args)


def to_numpy(spec: FlowSpec | dict, params: Any = None):
    """The float64 NumPy reference flow."""
    spec = _spec(spec)
    module, checked = _prepared(spec, params, "numpy")
    return backends.get("numpy").runtime().make(module, checked)
