"""Take the frameworks' own autoregressive layers over, exactly: Pyro's
``AffineAutoregressive`` (and ``ConditionalAffineAutoregressive``), TFP's
``MaskedAutoregressiveFlow`` with an ``AutoregressiveNetwork``, and NumPyro's
``InverseAutoregressiveTransform`` with its ``AutoregressiveNN``.

Each native MADE is read as what flowbridge's :class:`flowbridge.MADE` states: the input
order, each hidden layer's degrees and the weights. The degrees are worked out from the
native's own masks (:func:`degrees_from_masks`) and the masks they give are compared with
the native's, entry by entry, so a port is exact or refused, never approximate. Output
layouts are permutations of the last layer's units: TFP's dimension-major ``[D, 2]``
becomes flowbridge's parameter-major ``[shift | s]`` by reordering those units' weights.

:func:`flowbridge.from_pyro_native` and :func:`flowbridge.from_tfp_native` call into
this module for these pieces; :func:`from_numpyro_native` is NumPyro's entry point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import spec as S
from ..errors import SpecError
from .common import (
    _TORCH_ACTIVATIONS,
    NativeError,
    _pyro_spline,
    _shift_derivative_bias,
    _tf_activation,
)


def degrees_from_masks(inputs: list[int], outputs: list[int],
                       masks: list[np.ndarray]) -> list[list[int]] | None:  # fmt: skip
    """Hidden-unit degrees that give exactly ``masks``, or ``None`` if none found.

    Args:
        inputs: each input's degree (the entries' ``1..D`` in the event's order, then
            ``0`` per context input).
        outputs: each output unit's degree (its entry's).
        masks: each layer's connections, boolean ``(in, out)``: MADE's rule is
            ``degree_in <= degree_out`` into a hidden layer, ``<`` into the outputs.

    Returns:
        ``list[list[int]] | None``: one list per hidden layer; ``None`` where no degrees
        this search finds reproduce every mask (the native's masks follow another rule).

    Example:
        >>> import numpy as np
        >>> from flowbridge.native.made import degrees_from_masks
        >>> hidden = np.array([[True, True], [False, True]])  # inputs of degree 1, 2
        >>> out = np.array([[False, True], [False, False]])  # outputs of degree 1, 2
        >>> degrees_from_masks([1, 2], [1, 2], [hidden, out])
        [[1, 2]]
    """
    n_hidden = len(masks) - 1
    # from below: a unit's degree is at least the largest it reads
    low: list[np.ndarray] = []
    below = np.asarray(inputs)
    for mask in masks[:-1]:
        reads = np.where(mask, below[:, None], 0)
        low.append(reads.max(axis=0) if len(below) else np.zeros(mask.shape[1], int))
        below = low[-1]
    # from above: a unit is above every unit (or output) of the next layer it does not feed
    degrees: list[np.ndarray] = [np.zeros(0, int)] * n_hidden
    above, strict = np.asarray(outputs), True
    for k in range(n_hidden - 1, -1, -1):
        mask = masks[k + 1]
        missed = np.where(mask, -1, above[None, :] - (0 if strict else 1))
        floor = missed.max(axis=1) if mask.shape[1] else np.full(mask.shape[0], -1)
        degrees[k] = np.maximum(np.maximum(floor, 0), low[k])
        above, strict = degrees[k], False
    result = [[int(d) for d in layer] for layer in degrees]
    return result if _masks(inputs, result, outputs) == [m.tolist() for m in masks] else None


def _masks(inputs: list[int], hidden: list[list[int]], outputs: list[int]) -> list[list]:
    """MADE's masks from the degrees, as nested lists of booleans."""
    layers = [np.asarray(inputs), *map(np.asarray, hidden), np.asarray(outputs)]
    out = []
    for j, (a, b) in enumerate(zip(layers[:-1], layers[1:], strict=True)):
        last = j == len(layers) - 2
        out.append((a[:, None] < b[None, :] if last else a[:, None] <= b[None, :]).tolist())
    return out


def _made(order: list[int], hidden: list[int], activation: str, slope: float,
          inputs: list[int], outputs: list[int], masks: list[np.ndarray],
          at: str) -> S.MADE:  # fmt: skip
    degrees = degrees_from_masks(inputs, outputs, masks)
    if degrees is None:
        raise NativeError(f"{at}: its masks follow no degrees flowbridge's MADE can state "
                          "(MADE's rule: a unit reads the units below of lower or equal "
                          "degree, an output those of lower degree)")  # fmt: skip
    return S.MADE(hidden=tuple(hidden), activation=activation, negative_slope=slope,
                  order=tuple(order), degrees=tuple(tuple(d) for d in degrees))  # fmt: skip


def _input_degrees(order: list[int]) -> list[int]:
    degrees = [0] * len(order)
    for position, entry in enumerate(order):
        degrees[entry] = position + 1
    return degrees


# ----------------------------------------------------------------------------- Pyro
def _pyro_made(arn: Any, at: str, dim: int, context: int, param_dims: list[int],
               columns: np.ndarray, outputs: list[int]) -> tuple[S.MADE, dict]:  # fmt: skip
    """``(made, weights)`` of a Pyro ``(Conditional)AutoRegressiveNN``: its ``permutation``
    as the order, its hidden degrees read from its masks, ``MaskedLinear`` weights
    transposed to ``(in, out)``, the context's first-layer rows moved after the entries
    (Pyro reads ``[context | x]``), and the last layer's output units taken in
    flowbridge's order: flowbridge's unit ``k`` is Pyro's ``columns[k]``, of entry
    ``outputs[k]``."""
    import torch

    if arn.skip_layer is not None:
        raise NativeError(f"{at}: skip_connections=True cannot be converted; flowbridge's "
                          "MADE has no skip layer")  # fmt: skip
    if list(arn.param_dims) != list(param_dims) or arn.input_dim != dim:
        raise NativeError(f"{at}: expected AutoRegressiveNN({dim}, ..., param_dims="
                          f"{list(param_dims)}), got input_dim={arn.input_dim}, param_dims="
                          f"{list(arn.param_dims)}")  # fmt: skip
    width = int(getattr(arn, "context_dim", 0))
    if width != context:
        raise NativeError(f"{at}: reads a context of {width}; the flow's is {context}")
    name = type(arn.f).__name__
    if name not in _TORCH_ACTIVATIONS or (name == "ELU" and arn.f.alpha != 1.0):
        raise NativeError(f"{at}.f: activation {name} cannot be converted; expected one of "
                          f"{', '.join(_TORCH_ACTIVATIONS)} (ELU with alpha=1)")  # fmt: skip
    slope = float(arn.f.negative_slope) if name == "LeakyReLU" else 0.01
    order = [int(v) for v in arn.permutation.tolist()]
    entries = _input_degrees(order)
    inputs = entries + [0] * context  # flowbridge reads [x | context]

    def rows(m: torch.Tensor) -> np.ndarray:  # Pyro's (out, in) -> (in, out), [x | c]
        m = m.detach().cpu().double().numpy().T
        return np.concatenate([m[context:], m[:context]]) if m.shape[0] == dim + context else m

    layers = list(arn.layers)
    masks = [rows(layer.mask).astype(bool) for layer in layers]
    masks[-1] = masks[-1][:, columns]
    made = _made(order, list(arn.hidden_dims), _TORCH_ACTIVATIONS[name], slope, inputs,
                 [entries[e] for e in outputs], masks, at)  # fmt: skip
    weights = {}
    for j, layer in enumerate(layers):
        kernel = rows(layer.weight)
        bias = layer.bias.detach().cpu().double().numpy()
        if j == len(layers) - 1:
            kernel, bias = kernel[:, columns], bias[columns]
        weights[f"conditioner.{j}.kernel"] = kernel.copy()
        weights[f"conditioner.{j}.bias"] = bias.copy()
    return made, weights


def pyro_affine_autoregressive(part: Any, at: str, dim: int, context: int
                               ) -> tuple[S.AffineAutoregressive, dict]:  # fmt: skip
    """``(layer, weights)`` of a Pyro ``AffineAutoregressive`` (an IAF: the MADE reads the
    input) or ``ConditionalAffineAutoregressive`` (its ``ConditionalAutoRegressiveNN``
    reading ``[context | x]``, whose first kernel's rows become the neutral ``[x |
    context]``); the scale ``clamp`` to ``[log_scale_min_clip, log_scale_max_clip]``
    (straight-through, as Pyro's ``clamp_preserve_gradients``)."""
    conditional = type(part).__name__ == "ConditionalAffineAutoregressive"
    if getattr(part, "stable", False):
        raise NativeError(f"{at}: stable=True (Pyro's sigmoid-gated form) cannot be converted; "
                          "flowbridge's affine map is y = x * scale + shift")  # fmt: skip
    # Pyro's output is [mean | log_scale], D each: flowbridge's [shift | s] as it is
    made, weights = _pyro_made(part.nn if conditional else part.arn, f"{at}.arn", dim, context,
                               [1, 1], np.arange(2 * dim), list(range(dim)) * 2)  # fmt: skip
    options = part.kwargs if conditional else {"log_scale_min_clip": part.log_scale_min_clip,
                                               "log_scale_max_clip": part.log_scale_max_clip}  # fmt: skip
    scale = S.ClampScale(low=float(options.get("log_scale_min_clip", -5.0)),
                         high=float(options.get("log_scale_max_clip", 3.0)))  # fmt: skip
    return S.AffineAutoregressive(conditioner=made, scale=scale, direction="iaf"), weights


def pyro_spline_autoregressive(part: Any, at: str, dim: int
                               ) -> tuple[S.SplineAutoregressive, dict]:  # fmt: skip
    """``(layer, weights)`` of a Pyro ``SplineAutoregressive`` (an IAF): the spline as
    :func:`flowbridge.from_pyro_native` reads Pyro's splines (edge derivative and bin search
    Pyro's), the network's output ``(sum(param_dims), D)``, parameter-major rows, taken in
    flowbridge's layout (blocks ``u_w``, ``u_h``, ``u_d`` (, ``u_l``), each entry-major),
    the ``u_d`` block's biases less :func:`flowbridge.splines.derivative_offset`."""
    spline = _pyro_spline(part.spline, at)
    k = spline.bins
    sizes = [k, k, k - 1] + ([k] if spline.kind == "rational_linear" else [])
    starts = np.cumsum([0, *sizes[:-1]])
    columns = np.array([(start + b) * dim + i for start, m in zip(starts, sizes, strict=True)
                        for i in range(dim) for b in range(m)])  # fmt: skip
    outputs = [i for m in sizes for i in range(dim) for _ in range(m)]
    made, weights = _pyro_made(part.arn, f"{at}.arn", dim, 0, sizes, columns, outputs)
    weights = _shift_derivative_bias(weights, dim, spline)
    return S.SplineAutoregressive(conditioner=made, spline=spline, direction="iaf"), weights


# ----------------------------------------------------------------------------- TFP
def tfp_masked_autoregressive_flow(part: Any, at: str, dim: int
                                   ) -> tuple[S.AffineAutoregressive, dict]:  # fmt: skip
    """``(layer, weights)`` of a TFP ``MaskedAutoregressiveFlow`` whose
    ``shift_and_log_scale_fn`` is an ``AutoregressiveNetwork(params=2)``: a MAF (the MADE
    reads the output; TFP's forward is its ``D``-pass direction), scale ``exp``; the
    network's ``[D, 2]`` output units reordered to ``[shift | s]``."""
    import tensorflow_probability as tfp

    made = getattr(part, "_shift_and_log_scale_fn", None)
    if not isinstance(made, tfp.bijectors.AutoregressiveNetwork):
        raise NativeError(f"{at}: expected shift_and_log_scale_fn=tfb.AutoregressiveNetwork("
                          "params=2, ...); a bijector_fn or another function cannot be "
                          "converted")  # fmt: skip
    if made._params != 2 or made._conditional or not made._use_bias:
        raise NativeError(f"{at}: expected AutoregressiveNetwork(params=2, conditional=False, "
                          "use_bias=True)")  # fmt: skip
    if not made.built:
        raise NativeError(f"{at}: the AutoregressiveNetwork is not built yet; call the flow "
                          "once (its weights do not exist before)")  # fmt: skip
    if made._event_size != dim or made._event_ndims != 1:
        raise NativeError(f"{at}: event_shape={made._event_shape}; expected ({dim},)")
    if made._activation is None:
        raise NativeError(f"{at}: activation=None (a linear network) cannot be converted; "
                          "flowbridge's MADE has an activation between its layers")  # fmt: skip
    activation, slope = _keras_activation(made._activation, f"{at}.activation")
    entries = [int(v) for v in np.asarray(made._input_order)]
    order = [int(i) for i in np.argsort(entries, kind="stable")]
    # TFP's output unit k * 2 + p is entry k's parameter p; flowbridge's is p * D + k
    perm = np.array([k * 2 + p for p in range(2) for k in range(dim)])
    masks = [np.asarray(m, bool) for m in made._masks]
    masks[-1] = masks[-1][:, perm]
    dense = [layer for layer in made._network.layers if type(layer).__name__ == "Dense"]
    hidden = [int(layer.units) for layer in dense[:-1]]
    cond = _made(order, hidden, activation, slope, entries, entries * 2, masks, at)
    weights = {}
    for j, layer in enumerate(dense):
        kernel, bias = (np.asarray(v, np.float64) for v in (layer.kernel, layer.bias))
        if j == len(dense) - 1:
            kernel, bias = kernel[:, perm], bias[perm]
        weights[f"conditioner.{j}.kernel"] = kernel.copy()
        weights[f"conditioner.{j}.bias"] = bias.copy()
    return S.AffineAutoregressive(conditioner=cond, direction="maf"), weights


def _keras_activation(fn: Any, at: str) -> tuple[str, float]:
    """A Keras activation (a name, or a function) as flowbridge's name and slope."""
    import tensorflow as tf

    if isinstance(fn, str):
        fn = {"relu": tf.nn.relu, "tanh": tf.math.tanh, "elu": tf.nn.elu}.get(fn, fn)
        if isinstance(fn, str):
            raise NativeError(f"{at}: activation {fn!r} cannot be converted; expected 'relu', "
                              "'tanh' or 'elu' (or tf.nn.relu, tf.math.tanh, tf.nn.elu, "
                              "tf.nn.gelu, tf.nn.leaky_relu)")  # fmt: skip
    return _tf_activation(fn, at)


# -------------------------------------------------------------------------- NumPyro
_STAX = {"relu": "relu", "tanh": "tanh", "elu": "elu", "leaky_relu": "leaky_relu",
         "gelu": "gelu"}  # fmt: skip


def from_numpyro_native(
    transforms: Any, params: Any, *, hidden_dims: list[int] | tuple[int, ...],
    permutations: Any = None, activation: str = "relu",
) -> tuple[S.FlowSpec, dict]:
    """Take NumPyro ``InverseAutoregressiveTransform`` layers over, exactly.

    NumPyro's ``AutoregressiveNN`` is a pair of functions, its weights held apart (in
    ``svi.get_params(state)``, or bound by ``numpyro.module``), so the network's
    configuration is given here: its ``hidden_dims``, each layer's ``permutation``
    (NumPyro's default: the identity) and the ``activation``. The masks are rebuilt
    with NumPyro's own ``create_mask`` and checked against the degrees flowbridge states;
    each layer becomes an IAF :class:`flowbridge.AffineAutoregressive` (the MADE reads the
    input; NumPyro's inverse is its ``D``-pass loop) whose scale is ``clamp`` to the
    transform's ``[log_scale_min_clip, log_scale_max_clip]`` (straight-through, NumPyro's
    ``_clamp_preserve_gradients``). Between layers NumPyro's ``AutoIAFNormal`` puts a
    ``PermuteTransform`` (reversal); pass it in ``transforms`` and it becomes an explicit
    ``permutation``.

    Args:
        transforms: the ``InverseAutoregressiveTransform`` and ``PermuteTransform``
            objects in order, or one transform.
        params: one ``AutoregressiveNN`` weight list per ``InverseAutoregressiveTransform``
            (stax's: ``(W, b)`` per masked layer, ``()`` per activation), in order.
        hidden_dims: the networks' hidden widths (every layer's the same).
        permutations: each network's ``permutation`` (a sequence per transform), or
            ``None`` (the default): NumPyro's default, the identity.
        activation: the networks' nonlinearity, ``"relu"`` (``stax.Relu``, the
            ``AutoregressiveNN`` default), ``"elu"`` (``AutoIAFNormal``'s default),
            ``"tanh"``, ``"leaky_relu"`` or ``"gelu"``.

    Returns:
        ``tuple[FlowSpec, dict[str, numpy.ndarray]]``: the spec (``"from_numpyro"``) and
        its neutral parameters, float64.

    Raises:
        NativeError: a transform other than these two, weights of the wrong number or
            shape, or a permutation that is not one.

    Example:
        >>> import flowbridge as fb
        >>> import jax, numpy as np
        >>> from numpyro.distributions.flows import InverseAutoregressiveTransform
        >>> from numpyro.nn import AutoregressiveNN
        >>> init, apply = AutoregressiveNN(3, [6])
        >>> _, weights = init(jax.random.PRNGKey(0), (3,))
        >>> iaf = InverseAutoregressiveTransform(lambda x: apply(weights, x))
        >>> spec, params = fb.from_numpyro_native(iaf, [weights], hidden_dims=[6])
        >>> spec.layers[0].direction, params["layers.0.conditioner.1.kernel"].shape
        ('iaf', (6, 6))
    """
    from numpyro.distributions.flows import InverseAutoregressiveTransform
    from numpyro.distributions.transforms import PermuteTransform
    from numpyro.nn.auto_reg_nn import create_mask

    parts = list(transforms) if isinstance(transforms, (list, tuple)) else [transforms]
    iafs = [p for p in parts if isinstance(p, InverseAutoregressiveTransform)]
    params = list(params)
    if len(params) != len(iafs):
        raise NativeError(f"params: expected one weight list per InverseAutoregressiveTransform "
                          f"({len(iafs)}), got {len(params)}")  # fmt: skip
    if activation not in _STAX:
        raise NativeError(f"activation: expected one of {', '.join(_STAX)}, got {activation!r}")
    dims = [np.asarray(w[0][0]).shape[0] for w in params if w and len(w[0]) == 2]
    dim = dims[0] if dims else None
    for part in parts:
        if isinstance(part, PermuteTransform) and dim is None:
            dim = len(np.asarray(part.permutation))
    if dim is None:
        raise NativeError("transforms: expected at least one InverseAutoregressiveTransform")
    perms = [None] * len(iafs) if permutations is None else list(permutations)
    if len(perms) != len(iafs):
        raise NativeError(f"permutations: expected one per InverseAutoregressiveTransform "
                          f"({len(iafs)}), got {len(perms)}")  # fmt: skip
    layers, out, n = [], {}, 0
    for i, part in enumerate(parts):
        at = f"transforms[{i}] ({type(part).__name__})"
        if isinstance(part, PermuteTransform):
            layers.append(S.Permutation(kind="explicit", indices=tuple(
                int(v) for v in np.asarray(part.permutation))))  # fmt: skip
            continue
        if not isinstance(part, InverseAutoregressiveTransform):
            raise NativeError(f"{at}: cannot be converted; expected "
                              "InverseAutoregressiveTransform or PermuteTransform")  # fmt: skip
        perm = np.arange(dim) if perms[n] is None else np.asarray(perms[n])
        if sorted(perm.tolist()) != list(range(dim)):
            raise NativeError(f"permutations[{n}]: expected a permutation of 0..{dim - 1}")
        masks, _ = create_mask(dim, list(hidden_dims), perm, 2)
        weights = [w for w in params[n] if len(w) == 2]
        shapes = [(a, b) for a, b in zip([dim, *hidden_dims], [*hidden_dims, 2 * dim],
                                         strict=True)]  # fmt: skip
        if [tuple(np.shape(w[0])) for w in weights] != shapes:
            raise NativeError(f"params[{n}]: expected kernels of shapes {shapes}, got "
                              f"{[tuple(np.shape(w[0])) for w in weights]}")  # fmt: skip
        order = [int(v) for v in perm]
        entries = _input_degrees(order)
        made = _made(order, list(hidden_dims), activation, 0.01, entries, entries * 2,
                     [np.asarray(m, bool) for m in masks], at)  # fmt: skip
        scale = S.ClampScale(low=float(part.log_scale_min_clip),
                             high=float(part.log_scale_max_clip))  # fmt: skip
        layers.append(S.AffineAutoregressive(conditioner=made, scale=scale, direction="iaf"))
        for j, (kernel, bias) in enumerate(weights):
            out[f"layers.{i}.conditioner.{j}.kernel"] = np.array(kernel, np.float64)
            out[f"layers.{i}.conditioner.{j}.bias"] = np.array(bias, np.float64)
        n += 1
    try:
        spec = S.FlowSpec(name="from_numpyro", event_shape=(dim,), layers=layers)
    except SpecError as exc:
        raise NativeError(f"the converted flow is not valid: {exc}") from None
    from ..params import check_params

    return spec, check_params(spec, out)
