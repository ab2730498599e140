"""One parameter set for every backend: NumPy arrays under neutral names.

The layout is :func:`flowbridge.layers.param_shapes`: ``layers.{i}.conditioner.{j}.kernel``
``(in, out)``, ``layers.{i}.conditioner.{j}.bias`` ``(out,)`` and ``layers.{i}.log_scale``
``(D,)``, after a context embedding's ``context_embedding.{j}.kernel``/``.bias``. Files
are safetensors, with the spec hash in their metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    """Draw a fresh float64 parameter set for ``spec`` in the neutral layout.

    Each parameter is drawn by the rule its layer's plan states
    (:class:`flowbridge.layers.Param`), in the neutral order, from one
    ``numpy.random.default_rng(seed)``.

    ``init="identity"`` (the default) is how the generated modules start: hidden kernels
    uniform in ``+-1/sqrt(fan_in)``, biases zero, and each conditioner's last layer and
    every ``log_scale`` zero, so the flow is the identity map. ``init="random"`` draws
    those too (last kernels in ``+-1/sqrt(fan_in)``, biases in ``+-0.1``, ``log_scale``
    in ``+-0.3``): a non-identity flow for tests and conformance checks.

    Args:
        spec: the flow, a :class:`flowbridge.FlowSpec`.
        seed: the seed of the one ``numpy.random.default_rng`` that every parameter is
            drawn from, in the neutral order; the same seed gives the same parameters.
            Default ``0``.
        init: ``"identity"`` (the default: the flow starts as the identity map) or
            ``"random"`` (the zero-started parameters drawn too: a non-identity flow).

    Returns:
        ``dict[str, numpy.ndarray]``: neutral name -> float64 array of the shape
        :func:`flowbridge.param_shapes` gives, in the neutral order.

    Raises:
        ValueError: ``init`` is neither ``"identity"`` nor ``"random"``.
        AttributeError: ``spec`` is not a :class:`flowbridge.FlowSpec` (a plain dict, say:
            validate it first with ``FlowSpec.from_dict``).

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
        >>> params = fb.init_params(spec)
        >>> params["layers.0.conditioner.1.kernel"].shape, {a.dtype.name for a in params.values()}
        ((8, 4), {'float64'})
        >>> x = np.ones((3, 4))
        >>> np.allclose(fb.to_numpy(spec, params).forward(x), x)  # the identity map at init
        True
        >>> random = fb.init_params(spec, seed=1, init="random")
        >>> np.allclose(fb.to_numpy(spec, random).forward(x), x)
        False
    """
    if init not in ("identity", "random"):
        raise ValueError(f"init: expected 'identity' or 'random', got {init!r}")
    rng = np.random.default_rng(seed)
    return {
        name: (param.init if init == "identity" else param.random_init).draw(rng, param.shape)
        for name, param in param_specs(spec).items()
    }


def check_params(
    spec: FlowSpec,
    params: Any,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    *,
    dtype: str | None = None,
    traced: Callable[[Any], bool] | None = None,
) -> dict[str, Any]:
    """Check a parameter set against ``spec`` and return it as NumPy arrays.

    Every name, shape and dtype is checked against ``spec``; a :class:`flowbridge.ParamError`
    names the first parameter that does not fit. Values may be NumPy arrays, ``torch.Tensor``
    (detached and moved to the CPU), TensorFlow tensors, JAX arrays or nested lists; they
    must be floating point (each kept in its own dtype, not cast) and finite. Given the
    flow's ``dtype``, a value that would overflow it (``1e39`` in a float32 flow, which
    would become infinity) is refused too.

    Args:
        spec: the flow, a :class:`flowbridge.FlowSpec`.
        params: a mapping of neutral names (:func:`flowbridge.param_shapes`) to arrays;
            every name of the spec must be present and no other.
        shapes: the spec's :func:`~flowbridge.param_shapes` where the caller has them
            (a loaded module's ``PARAM_SHAPES``), else planned here. Default ``None``.
        dtype: the name of the floating dtype the flow computes in (``"float16"``,
            ``"float32"`` or ``"float64"``), whose range every value must fit; default
            ``None``: no range check beyond finiteness.
        traced: for the values of a flow built inside ``jax.jit``: a predicate that is
            true of a value whose contents are not known yet (a JAX tracer); such a value
            has its dtype (floating point) and shape checked and is returned as it is,
            while every other value is checked in full. Default ``None``: every value is
            checked in full.

    Returns:
        ``dict[str, numpy.ndarray]``: neutral name -> array, in the neutral order, each
        of the shape the spec gives it and of its own floating dtype (a traced value:
        itself).

    Raises:
        ParamError: ``params`` is not a mapping; a name is missing (the message names the
            first and counts them) or unexpected; a value is not an array, not floating
            point, of the wrong shape, holds NaN or infinity, or overflows ``dtype``.
        ValueError: ``dtype`` is not one of the names above.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.nice(2, num_couplings=2, hidden=(4,))
        >>> params = fb.check_params(spec, fb.init_params(spec))
        >>> params["layers.2.log_scale"].shape
        (2,)
        >>> fb.check_params(spec, {**params, "layers.2.log_scale": np.zeros(3)})
        Traceback (most recent call last):
        ...
        flowbridge.errors.ParamError: layers.2.log_scale: expected shape (2,), got (3,)
        >>> huge = {**params, "layers.2.log_scale": np.array([0.0, 1e39])}
        >>> fb.check_params(spec, huge, dtype="float32")
        Traceback (most recent call last):
        ...
        flowbridge.errors.ParamError: layers.2.log_scale: 1e+39 overflows float32 ...
    """
    if dtype is not None and dtype not in ("float16", "float32", "float64"):
        raise ValueError(f"dtype: expected 'float16', 'float32', 'float64' or None, got {dtype!r}")
    shapes = _names_fit(spec, params, shapes)
    out = {}
    for name, shape in shapes.items():
        if traced is not None and traced(params[name]):
            out[name] = _traced_fits(params[name], name, shape)
            continue
        value = _float_array(_to_numpy(params[name], name), name)
        if value.shape != shape:
            raise ParamError(f"{name}: expected shape {shape}, got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ParamError(f"{name}: expected finite values, got NaN or infinity")
        if dtype is not None:
            _fits_range(value, name, np.dtype(dtype))
        out[name] = value
    return out


def _traced_fits(value: Any, name: str, shape: tuple[int, ...]) -> Any:
    """A traced value (its contents unknown) whose dtype is floating point and whose
    shape is ``shape``; else a ParamError naming it."""
    dtype = np.dtype(value.dtype)
    if dtype.kind != "f":
        raise ParamError(f"{name}: expected a floating-point array, got dtype {dtype}")
    if tuple(value.shape) != shape:
        raise ParamError(f"{name}: expected shape {shape}, got {tuple(value.shape)}")
    return value


def _fits_range(value: np.ndarray, name: str, dtype: np.dtype) -> None:
    """Refuse a finite ``value`` that rounds to infinity in ``dtype``."""
    if value.dtype.itemsize <= dtype.itemsize:
        return
    with np.errstate(over="ignore"):
        over = np.isinf(value.astype(dtype))
    if over.any():
        largest = np.finfo(dtype).max
        raise ParamError(f"{name}: {value[over].flat[0]:g} overflows {dtype.name} (the "
                         f"flow's dtype, whose largest finite value is {largest:g})")


def _names_fit(
    spec: FlowSpec, params: Any, shapes: Mapping[str, tuple[int, ...]] | None
) -> dict[str, tuple[int, ...]]:
    """The expected shapes, once ``params`` is a mapping with exactly their names."""
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
    return shapes


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
    """Write a parameter set to a safetensors file, atomically.

    With ``spec``, ``params`` is checked against it first (:func:`flowbridge.check_params`)
    and the file is stamped with the spec's hash, which :func:`flowbridge.load_params`
    compares. The write goes to a temporary file beside ``path`` that is renamed into
    place, so an interrupted write never leaves a truncated file.

    Args:
        params: a mapping of neutral names to floating-point arrays (NumPy arrays,
            ``torch.Tensor``, TensorFlow tensors or nested lists), saved in their own
            dtype.
        path: the file to write (``str`` or ``pathlib.Path``); an existing file is
            replaced.
        spec: the flow the parameters belong to, a :class:`flowbridge.FlowSpec`, or
            ``None`` (the default: no check, and no spec hash in the file).

    Raises:
        ParamError: ``params`` does not fit ``spec`` (see :func:`flowbridge.check_params`);
            without a spec, ``params`` is not a mapping or a value is not a
            floating-point array.
        OSError: the file cannot be written (a missing directory, a full disk); an old
            file at ``path`` is left untouched.

    Example:
        >>> import os, tempfile
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.nice(2, num_couplings=2, hidden=(4,))
        >>> params = fb.init_params(spec, init="random")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     fb.save_params(params, os.path.join(tmp, "flow.safetensors"), spec)
        ...     loaded = fb.load_params(os.path.join(tmp, "flow.safetensors"), spec)
        >>> all(np.array_equal(params[name], loaded[name]) for name in params)
        True
    """
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
    """Read a parameter set from a safetensors file, checked against ``spec`` when given.

    A file written by :func:`flowbridge.save_params` with a spec carries that spec's hash.
    Loading it for another spec, or loading a file that carries no hash, raises a
    :class:`flowbridge.ParamError` naming both hashes: equal shapes do not make equal flows
    (another scale map or mask gives other outputs from the same weights).
    ``allow_other_spec=True`` loads the weights anyway when every name and shape fits.

    Args:
        path: the safetensors file (``str`` or ``pathlib.Path``); its tensors must be
            float16, float32 or float64.
        spec: the flow the parameters are for, a :class:`flowbridge.FlowSpec`, or
            ``None`` (the default: every tensor of the file returned, unchecked against
            a spec).
        allow_other_spec: load the weights even when the file was saved for another
            spec or carries no spec hash, as long as every name and shape fits. Default
            ``False``.

    Returns:
        ``dict[str, numpy.ndarray]``: neutral name -> array in the dtype it was saved in;
        with a spec, checked by :func:`flowbridge.check_params` and in the neutral order.

    Raises:
        ParamError: the file does not exist or is not a readable safetensors file; a
            tensor is not float16/32/64 (bfloat16, float8 or integers: convert it
            first); with ``spec``, the file was saved for another spec or without a spec
            hash (unless ``allow_other_spec``), or its parameters do not fit the spec.

    Example:
        >>> import os, tempfile
        >>> import flowbridge as fb
        >>> spec = fb.nice(2, num_couplings=2, hidden=(4,))
        >>> other = fb.nice(2, num_couplings=2, hidden=(4,), activation="tanh")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = os.path.join(tmp, "params.safetensors")
        ...     fb.save_params(fb.init_params(spec), path, spec)
        ...     try:
        ...         fb.load_params(path, other)  # another activation: refused
        ...     except fb.ParamError as error:
        ...         print("not for this spec" in str(error))
        ...     params = fb.load_params(path, other, allow_other_spec=True)
        True
        >>> params["layers.2.log_scale"].shape
        (2,)
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
    """Export the neutral parameters of a flowbridge Pyro flow, in the flow's own dtype.

    The inverse of building with :func:`flowbridge.to_pyro`: the trained weights come
    back under their neutral names, ready for :func:`flowbridge.save_params`,
    :func:`flowbridge.to_tfp` or :func:`flowbridge.to_numpy`. A flow with a context
    embedding gives its ``context_embedding.*`` parameters first.

    Args:
        flow: a flow built by :func:`flowbridge.to_pyro` or by a generated Pyro module's
            ``build_flow``: the flow, a list of its layers, or one layer.

    Returns:
        ``dict[str, numpy.ndarray]``: neutral name -> a copy of the weight, in the
        neutral order and the flow's own dtype (float32 or float64).

    Raises:
        BackendUnavailable: torch or pyro is not installed.
        ParamError: a layer is not a flowbridge layer (a native Pyro transform: convert
            it with :func:`flowbridge.from_pyro_native`).

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
        >>> params = fb.init_params(spec, seed=1, init="random")
        >>> exported = fb.params_from_pyro(fb.to_pyro(spec, params, dtype="float64"))
        >>> list(exported) == list(params)
        True
        >>> all(np.allclose(params[k], exported[k]) for k in params)
        True
    """
    return _export(flow, "pyro")


def params_from_tfp(bijector: Any) -> dict[str, np.ndarray]:
    """Export the neutral parameters of a flowbridge TFP flow (a ``Chain`` or one layer).

    The inverse of building with :func:`flowbridge.to_tfp`: the trained weights come back
    under their neutral names (an image flow's layout ``Transpose`` bijectors are
    skipped), ready for :func:`flowbridge.save_params`, :func:`flowbridge.to_pyro` or
    :func:`flowbridge.to_numpy`. A flow with a context embedding gives its
    ``context_embedding.*`` parameters first.

    Args:
        bijector: a flow built by :func:`flowbridge.to_tfp` or by a generated TFP module's
            ``build_flow`` (a ``Chain``), or one of its layers.

    Returns:
        ``dict[str, numpy.ndarray]``: neutral name -> a copy of the weight, in the
        neutral order and the flow's own dtype (float32 or float64).

    Raises:
        BackendUnavailable: tensorflow or tensorflow_probability is not installed.
        ParamError: a layer is not a flowbridge layer (a native TFP bijector: convert it
            with :func:`flowbridge.from_tfp_native`).

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
        >>> params = fb.init_params(spec, seed=1, init="random")
        >>> exported = fb.params_from_tfp(fb.to_tfp(spec, params, dtype="float64"))
        >>> list(exported) == list(params)
        True
        >>> all(np.allclose(params[k], exported[k]) for k in params)
        True
    """
    return _export(bijector, "tfp")


def params_from_jax(flow: Any) -> dict[str, np.ndarray]:
    """Export the neutral parameters of a flowbridge JAX flow, in the flow's own dtype.

    The inverse of building with :func:`flowbridge.to_jax` (or of a NumPyro guide's
    trained ``numpyro.param`` values, which are these names): the weights come back
    under their neutral names as NumPy arrays, ready for :func:`flowbridge.save_params`,
    :func:`flowbridge.to_pyro`, :func:`flowbridge.to_tfp` or :func:`flowbridge.to_numpy`.
    A flow with a context embedding gives its ``context_embedding.*`` parameters first.

    Args:
        flow: a flow built by :func:`flowbridge.to_jax` or a generated JAX module's
            ``build_flow`` (trained or not), or one of its layers.

    Returns:
        ``dict[str, numpy.ndarray]``: neutral name -> a copy of the weight, in the
        neutral order and the flow's own dtype (float32 or float64).

    Raises:
        BackendUnavailable: jax is not installed.
        ParamError: a layer is not a flowbridge layer.

    Example:
        >>> import numpy as np
        >>> import flowbridge as fb
        >>> spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
        >>> params = fb.init_params(spec, seed=0, init="random")
        >>> back = fb.params_from_jax(fb.to_jax(spec, params))
        >>> back["layers.0.conditioner.0.kernel"].dtype.name
        'float32'
        >>> all(np.array_equal(back[k], params[k].astype(np.float32)) for k in params)
        True
    """
    return _export(flow, "jax")
