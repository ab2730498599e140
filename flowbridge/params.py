"""One parameter set for every backend: NumPy arrays under neutral names.

The layout is :func:`flowbridge.layers.param_shapes`: ``layers.{i}.conditioner.{j}.kernel``
``(in, out)``, ``layers.{i}.conditioner.{j}.bias`` ``(out,)`` and ``layers.{i}.log_scale``
``(D,)``, after a context embedding's ``context_embedding.{j}.kernel``/``.bias``. Files
are safetensors, with the spec hash in their metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import backends
from .errors import ParamError
from .files import write_atomic
from .layers import param_shapes, param_specs
from .spec import FlowSpec

PARAMS_FORMAT = "1"


def init_params(
    spec: FlowSpec,
    seed: int = 0,
    *,
    init: Literal["identity", "random"] = "identity",
) -> dict[str, np.ndarray]:
    """Fresh float64 parameters for ``spec``, each drawn by the rule its layer's plan
    states (:class:`flowbridge.layers.Param`), in the neutral order, from one
    ``numpy.random.default_rng(seed)``.

    ``init="identity"`` (the default) is how the generated modules start: hidden kernels
    uniform in ``+-1/sqrt(fan_in)``, biases zero, and each conditioner's last layer and
    every ``log_scale`` zero, so the flow is the identity map. ``init="random"`` draws
    those too (last kernels in ``+-1/sqrt(fan_in)``, biases in ``+-0.1``, ``log_scale``
    in ``+-0.3``): a non-identity flow for tests and conformance checks.
    """
    if init not in ("identity", "random"):
        raise ValueError(f"init: expected 'identity' or 'random', got {init!r}")
    rng = np.random.default_rng(seed)
    return {
        name: (param.init if init == "identity" else param.random_init).draw(rng, param.shape)
        for name, param in param_specs(spec).items()
    }


def check_params(
    spec: FlowSpec, params: Any, shapes: Mapping[str, tuple[int, ...]] | None = None
) -> dict[str, np.ndarray]:
    """``params`` as NumPy arrays, after checking every name, shape and dtype against
    ``spec``; raises :class:`ParamError` naming the first parameter that does not fit.
    ``shapes``: the spec's :func:`~flowbridge.param_shapes` where the caller has them
    (a loaded module's ``PARAM_SHAPES``), else planned here."""
    if not isinstance(params, Mapping):
        raise ParamError(f"params: expected a mapping of names to arrays, got {type(params).__name__}")
    shapes = param_shapes(spec) if shapes is None else {k: tuple(v) for k, v in shapes.items()}
    missing = [n for n in shapes if n not in params]
    extra = sorted(str(n) for n in params if n not in shapes)
    if missing:
        raise ParamError(f"{missing[0]}: missing (expected shape {shapes[missing[0]]}); "
                         f"{len(missing)} missing in all")  # fmt: skip
    if extra:
        raise ParamError(f"{extra[0]}: unexpected parameter for this spec; it expects "
                         f"{len(shapes)} parameters (see flowbridge.param_shapes)")  # fmt: skip
    out = {}
    for name, shape in shapes.items():
        value = _float_array(_to_numpy(params[name], name), name)
        if value.shape != shape:
            raise ParamError(f"{name}: expected shape {shape}, got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ParamError(f"{name}: expected finite values, got NaN or infinity")
        out[name] = value
    return out


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # a tf tensor
        value = value.numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ParamError(f"{name}: expected an array, got {type(value).__name__} ({exc})") from None


def save_params(params: Mapping[str, Any], path: str | Path, spec: FlowSpec | None = None) -> None:
    """Write ``params`` to a safetensors file, atomically (checked against ``spec`` when
    given, and then stamped with its hash, which :func:`load_params` compares)."""
    from safetensors.numpy import save

    if spec is not None:
        arrays = check_params(spec, params)
    else:
        if not isinstance(params, Mapping):
            raise ParamError(f"params: expected a mapping of names to arrays, got {type(params).__name__}")
        arrays = {str(k): _float_array(_to_numpy(v, str(k)), str(k)) for k, v in params.items()}
    metadata = {"flowbridge_params": PARAMS_FORMAT}
    if spec is not None:
        metadata["spec_hash"] = spec.hash
    data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata)
    write_atomic(path, data)


def _float_array(value: np.ndarray, name: str) -> np.ndarray:
    if value.dtype.kind != "f":
        raise ParamError(f"{name}: expected a floating-point array, got dtype {value.dtype}")
    return value


#: safetensors dtypes that NumPy holds exactly; others (BF16, F8_*) are refused by name.
_READABLE = {"F16", "F32", "F64"}


def read_safetensors(path: str | Path, what: str) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """``(metadata, arrays)`` of a safetensors file; any problem is a :class:`ParamError`
    that names the file (``what`` says what it should be) and the tensor."""
    from safetensors import SafetensorError, safe_open

    where = f"{what} {str(path)!r}"
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            arrays = {}
            for name in f.keys():
                dtype = f.get_slice(name).get_dtype()
                if dtype not in _READABLE:
                    raise ParamError(f"{where}: {name}: expected a float16/32/64 tensor, got "
                                     f"{dtype} (convert it to float32 or float64 first)")  # fmt: skip
                arrays[name] = f.get_tensor(name)
    except ParamError:
        raise
    except FileNotFoundError:
        raise ParamError(f"{where}: no such file") from None
    except (OSError, SafetensorError, ValueError, TypeError, KeyError) as exc:
        raise ParamError(f"{where}: not a readable safetensors file ({_short(exc)})") from None
    return metadata, arrays


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def load_params(
    path: str | Path, spec: FlowSpec | None = None, *, allow_other_spec: bool = False
) -> dict[str, np.ndarray]:
    """Read parameters from a safetensors file, checked against ``spec`` when given.

    A file written by :func:`save_params` with a spec carries that spec's hash. Loading
    it for another spec, or loading a file that carries no hash, raises a
    :class:`ParamError` naming both hashes: equal shapes do not make equal flows (another
    scale map or mask gives other outputs from the same weights). ``allow_other_spec=True``
    loads the weights anyway when every name and shape fits.
    """
    metadata, params = read_safetensors(path, "params file")
    if spec is None:
        return params
    stamped = metadata.get("spec_hash")
    if stamped != spec.hash and not allow_other_spec:
        got = f"sha256:{stamped[:16]}" if stamped else "no spec hash"
        raise ParamError(f"params file {str(path)!r}: saved for spec {got}, not for this spec "
                         f"sha256:{spec.hash[:16]}; pass allow_other_spec=True (flowbridge "
                         "check --allow-other-spec) to load weights whose shapes fit anyway")  # fmt: skip
    return check_params(spec, params)


def _export(flow: Any, backend: str) -> dict[str, np.ndarray]:
    out = {}
    embedding = getattr(flow, "embedding", None)  # a conditional flow's context embedding
    if embedding is not None:
        for name, value in embedding.neutral_params().items():
            out[f"context_embedding.{name}"] = _to_numpy(value, name).copy()
    for i, layer in enumerate(backends.get(backend).runtime().layers_of(flow)):
        if not callable(getattr(layer, "neutral_params", None)):
            raise ParamError(
                f"layers[{i}]: {type(layer).__name__} is not a flowbridge layer; "
                "build the flow with flowbridge.to_" + backend + " or a generated module"
            )
        for name, value in layer.neutral_params().items():
            out[f"layers.{i}.{name}"] = _to_numpy(value, name).copy()
    return out


def params_from_pyro(flow: Any) -> dict[str, np.ndarray]:
    """The neutral parameters of a flowbridge Pyro flow, in the flow's own dtype."""
    return _export(flow, "pyro")


def params_from_tfp(bijector: Any) -> dict[str, np.ndarray]:
    """The neutral parameters of a flowbridge TFP flow (a ``Chain`` or one layer)."""
    return _export(bijector, "tfp")
