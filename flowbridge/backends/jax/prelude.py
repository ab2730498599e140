"""The jax backend's prelude: what every generated JAX module needs at run time, as real
code (imported, linted and tested here) that flowbridge.codegen inlines into each
generated module, definition by definition, from this source.

A generated JAX flow is a pytree: its leaves are the weights (and a batch norm's running
averages), a repeated block's stacked on a leading axis (:class:`_Sequence`), so
``jax.jit``, ``jax.grad`` and ``jax.vmap`` take the flow itself as an argument and a
gradient comes back as a flow of the same shape; ``neutral_params`` names them.
Everything else a layer holds (shapes, index buffers, constants, its dtype) is static
data of the pytree, compared by value, so a flow rebuilt with the same spec reuses a
jitted function's compilation. Nothing is written in place: loading weights gives a new
flow, and a batch norm's training-mode forward returns its new running averages.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..prelude import _per_layer  # shared: inlined into every generated module


def _batch_mean(x, event_ndims):
    """The mean per channel of an image (C, H, W) or per entry of a vector, over every
    batch dimension (and H, W): (C,)."""
    flat = x.reshape((-1,) + x.shape[x.ndim - event_ndims :])
    return flat.mean(axis=(0, 2, 3) if event_ndims == 3 else 0)


def _clamp_straight_through(x, low, high):
    """clamp(x, low, high) in value, exact at any magnitude; gradient 1 (straight through)."""
    return jax.lax.stop_gradient(jnp.clip(x, low, high)) + (x - jax.lax.stop_gradient(x))


def _conv(sizes, kernel_size, init, rng, dtype):
    """Convolutions sizes[0] -> ... -> sizes[-1] channels, kernels (k, k, in, out) (the
    neutral layout), each weight started by its bound in ``init``."""
    kernels, biases = [], []
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        shape = (kernel_size, kernel_size, n_in, n_out)
        kernels.append(_initial(init[f"conditioner.{j}.kernel"], shape, rng, dtype))
        biases.append(_initial(init[f"conditioner.{j}.bias"], (n_out,), rng, dtype))
    return kernels, biases


def _conv2d(x, kernel, bias):
    """Stride-1 "same" cross-correlation: x (*batch, C_in, H, W), kernel (k, k, C_in,
    C_out), bias (C_out,) -> (*batch, C_out, H, W), at full precision (no TF32)."""
    flat = x.reshape((-1,) + x.shape[-3:])
    out = jax.lax.conv_general_dilated(
        flat, kernel, (1, 1), "SAME", dimension_numbers=("NCHW", "HWIO", "NCHW"),
        precision=jax.lax.Precision.HIGHEST,
    )  # fmt: skip
    return (out + bias[:, None, None]).reshape(x.shape[:-3] + out.shape[1:])


def _repeat(step, count, state, *args):
    """``state = step(state, *args)``, ``count`` times, as a ``jax.lax.fori_loop`` (its
    count static, so reverse-mode differentiable): an autoregressive layer's D-pass
    direction, compiled once however large ``count``."""
    return jax.lax.fori_loop(0, count, lambda _, s: step(s, *args), state)


def _gather(values, index):
    """values[..., index] along the last axis: values (..., K), index (...) of integers,
    their leading dims broadcast."""
    shape = jnp.broadcast_shapes(values.shape[:-1], index.shape)
    values = jnp.broadcast_to(values, shape + values.shape[-1:])
    return jnp.take_along_axis(values, jnp.broadcast_to(index, shape)[..., None], axis=-1)[..., 0]


def _pad_last(x, before, after, value):
    """x with ``before`` and ``after`` entries of ``value`` added along the last axis."""
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(before, after)], constant_values=value)


def _transpose_last(x, perm):
    """x with its last ``len(perm)`` dims permuted (result dim i is dim ``perm[i]``)."""
    lead = x.ndim - len(perm)
    return jnp.transpose(x, tuple(range(lead)) + tuple(lead + i for i in perm))


def _linear(x, kernel, bias):
    """x (*batch, in) @ kernel (in, out) + bias (out,), at full precision (no TF32)."""
    return jnp.matmul(x, kernel, precision=jax.lax.Precision.HIGHEST) + bias


def _squeeze2x2(x):
    """(*batch, C, H, W) -> (*batch, 4C, H/2, W/2): y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]."""
    c, height, width = x.shape[-3:]
    y = x.reshape(-1, c, height // 2, 2, width // 2, 2).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(x.shape[:-3] + (4 * c, height // 2, width // 2))


def _unsqueeze2x2(y):
    """The inverse of a 2x2 squeeze: (*batch, 4C, H/2, W/2) -> (*batch, C, H, W)."""
    c4, height, width = y.shape[-3:]
    x = y.reshape(-1, c4 // 4, 2, 2, height, width).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(y.shape[:-3] + (c4 // 4, 2 * height, 2 * width))


def _initial(bound, shape, rng, dtype):
    """An array uniform in +-bound, or zeros where the bound is 0 (PARAM_INIT), drawn
    with NumPy's ``rng`` (so a seed gives the NumPy module's weights) in ``dtype``."""
    if bound == 0.0:
        return jnp.zeros(shape, dtype)
    return jnp.asarray(rng.uniform(-bound, bound, size=shape), dtype)


def _identity(bound, shape, rng, dtype):
    """A square matrix (an LU factorisation's packed factors): the identity, plus uniform
    in +-bound where the bound is not 0 (PARAM_INIT), drawn with NumPy's ``rng``."""
    return jnp.eye(shape[0], dtype=dtype) + _initial(bound, shape, rng, dtype)


def _dense(sizes, init, rng, dtype, prefix="conditioner."):
    """Dense layers sizes[0] -> ... -> sizes[-1], kernels (in, out), each weight started
    by its bound in ``init`` (the layer's entries of PARAM_INIT, named {prefix}{j}.*)."""
    kernels, biases = [], []
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        kernels.append(_initial(init[f"{prefix}{j}.kernel"], (n_in, n_out), rng, dtype))
        biases.append(_initial(init[f"{prefix}{j}.bias"], (n_out,), rng, dtype))
    return kernels, biases


def _dtype(dtype):
    """The NumPy dtype of a flow: float32, or float64 where JAX's 64-bit mode is on."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected float32 or float64, got {dtype}")
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype: float64 needs JAX's 64-bit mode, which is off: call "
            "jax.config.update('jax_enable_x64', True) at the start of the program, or "
            "build and run the flow inside `with jax.enable_x64(True):`"
        )
    return dtype


def _real(layer, value, where):
    """``value`` as an array of real numbers, not cast yet: a JAX array (traced ones
    too) as it is, anything else through NumPy; else a TypeError or ValueError that
    starts with ``where`` and names the flow's dtype. Integers and NumPy float16, float32
    and float64 are taken (they convert to the flow's dtype, as TFP's bijectors convert
    them); a JAX array of another floating dtype, and any other floating dtype (bfloat16,
    float8), is refused, never cast; booleans, complex numbers, strings, ``None`` and
    ragged nested lists are refused."""
    want = np.dtype(layer.dtype).name
    if value is None:
        raise TypeError(f"{where}: expected an array of real numbers, got None (the flow's "
                        f"dtype is {want})")  # fmt: skip
    if isinstance(value, jax.Array):
        array = value
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):  # NumPy's "inhomogeneous shape"
            raise ValueError(
                f"{where}: expected a rectangular array (nested lists of "
                f"equal lengths), got a ragged {type(value).__name__}"
            ) from None
    dtype = np.dtype(array.dtype)
    if jnp.issubdtype(dtype, jnp.floating):
        if dtype.name not in ("float16", "float32", "float64"):
            raise TypeError(
                f"{where}: {dtype.name} is a floating dtype this flow does "
                f"not take: expected {want} (the flow's dtype); cast it first"
            )
        if isinstance(array, jax.Array) and dtype != layer.dtype:
            raise TypeError(f"{where}: expected dtype {want} (the flow's), got {dtype.name}")
    elif not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{where}: expected real numbers, got dtype {dtype} (the flow's dtype "
                        f"is {want})")  # fmt: skip
    return array


def _checked(layer, value, name, event):
    """``value`` as an array of the layer's dtype if it holds real numbers of shape
    (*batch, *event); else a TypeError or ValueError naming what was expected (the
    dtypes taken are ``_real``'s)."""
    where = f"{type(layer).__name__}: {name}"
    array = _real(layer, value, where)
    if array.ndim < len(event) or tuple(array.shape[array.ndim - len(event) :]) != event:
        want = ", ".join(["*batch", *map(str, event)])
        raise ValueError(f"{where}: expected shape ({want}), got {tuple(array.shape)}")
    return jnp.asarray(array, layer.dtype)


def _in_domain(layer, value, name):
    """``value`` if every entry lies in the layer's ``domain_interval`` (None: the reals)
    or the layer does not validate (``validate_args`` off, the default, as TFP's); else a
    ValueError naming the layer, the input and the interval. The check needs concrete
    values: inside ``jax.jit`` it is skipped, as TFP's XLA drops its assertions."""
    if layer.domain_interval is None or not layer.validate_args:
        return value
    if isinstance(value, jax.core.Tracer):
        return value
    low, high = layer.domain_interval
    host = np.asarray(value)
    outside = ~((host >= low) & (host <= high))
    if outside.any():
        raise ValueError(
            f"{type(layer).__name__}: {name}: expected values in [{low:g}, {high:g}] (the "
            f"layer's domain), got {host[outside].flat[0]:g} ({int(outside.sum())} of "
            f"{host.size} entries outside)"
        )
    return value


def _static_key(value):
    """A hashable stand-in for a layer's static attribute (arrays by dtype, shape and
    bytes), so two flows of one spec have equal pytree structures."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_static_key(v) for v in value))
    if isinstance(value, np.dtype):
        return ("dtype", value.str)
    return value


class _Static:
    """A layer's static data (everything but its weights): the pytree's aux data."""

    def __init__(self, items):
        self.items = dict(items)
        self._key = tuple((k, _static_key(v)) for k, v in sorted(self.items.items()))

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key == other._key

    def __hash__(self):
        return hash(self._key)


def _neutral_set(layer, params):
    """Store ``params`` (this layer's local neutral names -> arrays) in ``layer``:
    ``conditioner.{j}.kernel``/``.bias`` (``{j}.*`` in an embedding) are its dense or
    convolution weights, any other name the attribute of that name."""
    for key, value in params.items():
        parts = key.split(".")
        if len(parts) >= 2 and parts[-2].isdigit() and parts[-1] in ("kernel", "bias"):
            weights = layer.kernels if parts[-1] == "kernel" else layer.biases
            weights[int(parts[-2])] = value
        else:
            setattr(layer, key, value)


class _Tree:
    """Registers every subclass as a pytree whose children are its ``neutral_params()``
    (a dict of local neutral names -> arrays) and whose aux data is the rest of it."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(cls, cls._tree_flatten, cls._tree_unflatten)

    def _tree_flatten(self):
        leaves = self.neutral_params()
        static = {k: v for k, v in self.__dict__.items() if k not in ("kernels", "biases")}
        for name in leaves:
            static.pop(name.split(".")[0], None)
        return (leaves,), _Static(static)

    @classmethod
    def _tree_unflatten(cls, static, children):
        new = object.__new__(cls)
        new.__dict__.update(static.items)
        new._restore(children[0])
        return new

    def _restore(self, leaves):
        """Set the weights from ``leaves`` (local neutral names -> arrays), in new lists."""
        count = len({k.rsplit(".", 1)[0] for k in leaves if k.endswith((".kernel", ".bias"))})
        if count:
            self.kernels, self.biases = [None] * count, [None] * count
        _neutral_set(self, leaves)


class _Layer(_Tree):
    """The API shared by every layer: checked inputs in the flow's dtype, pure functions
    of the weights. A layer whose input is not any real vector (a logit's data in [0, 1])
    says so in ``domain_interval``; with ``validate_args`` its input is checked against it
    (eagerly; not inside ``jax.jit``)."""

    domain_interval = None  # the closed interval every input entry lies in; None: the reals
    validate_args = False
    _INDEX_FIELDS = ()  # static index arrays that may differ between the steps of a scan

    def __init__(self, event_shape, output_shape=None, dtype="float32"):
        self.event_shape = tuple(event_shape)
        self.output_shape = tuple(output_shape or event_shape)
        self.dtype = _dtype(dtype)

    def _through(self, x, forward, context=None):
        """(output, log-det) of one direction, as a flow's loop calls it (a layer that
        does not read the context is not given it)."""
        return self.forward_with_log_det(x) if forward else self.inverse_with_log_det(x)

    def forward_with_log_det(self, x):
        """(y, log|det dy/dx|) for x of shape (*batch, *event_shape)."""
        x = _in_domain(self, _checked(self, x, "x", self.event_shape), "x")
        return self._forward_with_log_det(x)

    def inverse_with_log_det(self, y):
        """(x, log|det dx/dy|) for y of shape (*batch, *output_shape)."""
        return self._inverse_with_log_det(_checked(self, y, "y", self.output_shape))

    def forward_training(self, x):
        """(y, log|det dy/dx|, updates): the training-mode forward (a batch norm's uses the
        batch's statistics) and the new values of the layer's state, {local name: array}
        (empty for a layer without a training mode); apply them with :func:`replace`."""
        x = _in_domain(self, _checked(self, x, "x", self.event_shape), "x")
        if hasattr(self, "_forward_training"):
            return self._forward_training(x)
        return (*self._forward_with_log_det(x), {})

    def forward(self, x):
        return self.forward_with_log_det(x)[0]

    def inverse(self, y):
        return self.inverse_with_log_det(y)[0]

    def forward_log_det_jacobian(self, x):
        return self.forward_with_log_det(x)[1]

    def inverse_log_det_jacobian(self, y):
        return self.inverse_with_log_det(y)[1]


def _checked_context(layer, context, x=None):
    """``context`` as an array of the layer's dtype if it holds real numbers (the dtypes
    ``_real`` takes) of shape (*batch, context_dim) whose batch broadcasts to x's
    (when x is given: a context embedding's input has none yet); else a TypeError or
    ValueError naming both sizes."""
    where = f"{type(layer).__name__}: context"
    context = _real(layer, context, where)
    shape = tuple(np.shape(context))
    if len(shape) < 1 or shape[-1] != layer.context_dim:
        raise ValueError(
            f"{where}: expected shape (*batch, {layer.context_dim}) (the flow's context_dim), "
            f"got {shape}"
        )
    if x is not None:
        batch = tuple(x.shape[: x.ndim - len(layer.event_shape)])
        try:
            fits = np.broadcast_shapes(shape[:-1], batch) == batch
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"{where}: its batch shape {shape[:-1]} does not broadcast to "
                             f"x's {batch}")  # fmt: skip
    return jnp.asarray(context, layer.dtype)


class _ConditionalLayer(_Layer):
    """A layer that reads the context: every call takes it after the input."""

    def __init__(self, event_shape, context_dim, dtype="float32"):
        super().__init__(event_shape, dtype=dtype)
        self.context_dim = context_dim

    def forward_with_log_det(self, x, context):
        """(y, log|det dy/dx|) for x (*batch, *event_shape), context (*batch, context_dim)."""
        x = _checked(self, x, "x", self.event_shape)
        return self._forward_with_log_det(x, _checked_context(self, context, x))

    def inverse_with_log_det(self, y, context):
        """(x, log|det dx/dy|) for y (*batch, *event_shape), context (*batch, context_dim)."""
        y = _checked(self, y, "y", self.output_shape)
        return self._inverse_with_log_det(y, _checked_context(self, context, y))

    def forward_training(self, x, context):
        """As ``_Layer.forward_training``, at ``context``."""
        x = _checked(self, x, "x", self.event_shape)
        context = _checked_context(self, context, x)
        if hasattr(self, "_forward_training"):
            return self._forward_training(x, context)
        return (*self._forward_with_log_det(x, context), {})

    def _through(self, x, forward, context=None):
        method = self.forward_with_log_det if forward else self.inverse_with_log_det
        return method(x, context)

    def forward(self, x, context):
        return self.forward_with_log_det(x, context)[0]

    def inverse(self, y, context):
        return self.inverse_with_log_det(y, context)[0]

    def forward_log_det_jacobian(self, x, context):
        return self.forward_with_log_det(x, context)[1]

    def inverse_log_det_jacobian(self, y, context):
        return self.inverse_with_log_det(y, context)[1]


def _zeros_batch(x, event_shape):
    """Zeros of x's batch shape (*batch,) in x's dtype: where log-dets add up."""
    return jnp.zeros(x.shape[: x.ndim - len(event_shape)], x.dtype)


def _blank(layer):
    """A copy of ``layer`` with its index fields (``_INDEX_FIELDS``) zeroed: what the
    repeats of a block share."""
    blank = _copied(layer)
    for name in layer._INDEX_FIELDS:
        setattr(blank, name, np.zeros_like(getattr(layer, name)))
    return blank


def _signature(layer):
    """What two layers must share to be one step of a ``jax.lax.scan``: the pytree
    structure, static data included, with the index fields (``_INDEX_FIELDS``, which may
    differ) blanked, and each weight's shape and dtype."""
    leaves, tree = jax.tree_util.tree_flatten(_blank(layer))
    return tree, tuple((tuple(leaf.shape), np.dtype(leaf.dtype).str) for leaf in leaves)


def _paddable(layer):
    """Whether ``layer`` can stand in as an identity: a layer that says it is the identity
    when its index fields hold ``0..n-1`` (``_IDENTITY_AT_ARANGE``: a permutation) and
    holds no weights."""
    if not getattr(layer, "_IDENTITY_AT_ARANGE", False) or jax.tree_util.tree_leaves(layer):
        return False
    return all(np.ndim(getattr(layer, name)) == 1 for name in layer._INDEX_FIELDS)


def _as_identity(layer):
    """A copy of ``layer`` (:func:`_paddable`) with its index fields ``0..n-1``: the
    identity map."""
    new = _copied(layer)
    for name in layer._INDEX_FIELDS:
        value = getattr(layer, name)
        setattr(new, name, np.arange(len(value), dtype=value.dtype))
    return new


def _runs(layers, longest=4):
    """The layers as runs ``(start, period, count, pad)``: ``count`` repeats of a block of
    ``period`` layers whose signatures repeat (count >= 2; the period that covers most
    layers, up to ``longest``), the last repeat short of the block's final ``pad``
    layers where those can be identities (:func:`_paddable`; a flow's last
    coupling, which no permutation follows, joins the couplings before it, as in
    flowjax's scan), and single layers ``(i, 1, 1, 0)``, first to last. A run covers
    ``period * count - pad`` layers."""
    signatures = [_signature(layer) for layer in layers]
    runs, start = [], 0
    while start < len(layers):
        best = (1, 1, 0)
        for period in range(1, longest + 1):
            block, count = signatures[start : start + period], 1
            while signatures[start + count * period : start + (count + 1) * period] == block:
                count += 1
            end, pad = start + count * period, 0
            for kept in range(period - 1, 0, -1):  # the longest start of one more block
                tail = layers[start + kept : start + period]
                if signatures[end : end + kept] == block[:kept] and all(map(_paddable, tail)):
                    count, pad = count + 1, period - kept
                    break
            if count > 1 and period * count - pad > best[0] * best[1] - best[2]:
                best = (period, count, pad)
        runs.append((start, *best))
        start += best[0] * best[1] - best[2]
    return runs


def _block(tree, fields, leaves, indices):
    """One block of layers of structure ``tree`` (a list of layers) with weights
    ``leaves``, each layer's index ``fields`` set from ``indices``."""
    block = jax.tree_util.tree_unflatten(tree, leaves)
    for layer, names, values in zip(block, fields, indices, strict=True):
        for name, value in zip(names, values, strict=True):
            setattr(layer, name, value)
    return block


@functools.lru_cache(maxsize=64)
def _scan_step(tree, fields, forward):
    """The body of a scan over blocks of layers of structure ``tree`` (a list of layers):
    one block, each layer's index ``fields`` taken from the scanned values. Cached, so an
    unchanged flow traces it once."""

    def step(carry, scanned):
        x, total, context = carry
        block = _block(tree, fields, *scanned)
        for layer in block if forward else block[::-1]:
            x, log_det = layer._through(x, forward, context)
            total = total + log_det
        return (x, total, context), None

    return step


def _traced(values):
    """Whether any of ``values`` is a JAX tracer (inside ``jax.jit``, ``jax.grad``, ...)."""
    return any(isinstance(value, jax.core.Tracer) for value in values)


@jax.tree_util.register_pytree_node_class
class _Stack:
    """``count`` repeats of a block of layers (a coupling and its permutation, say) held
    as one array per weight, the repeats stacked on a leading axis: the layout a
    ``jax.lax.scan`` over the blocks reads, so a traced call (and an optimizer's update)
    takes the weights as they are stored. A pytree whose children are those arrays; its
    static data is the block's structure (:func:`_signature`), each repeat's index
    fields (``_INDEX_FIELDS``, which may differ between repeats) and ``pad``, the
    number of identities that end the last repeat (a flow's last coupling scanned with
    its permutation made the identity)."""

    def __init__(self, leaves, tree, fields, indices, count, pad=0):
        self.leaves, self.tree, self.fields = list(leaves), tree, fields
        self.indices, self.count, self.pad = indices, count, pad

    @classmethod
    def of(cls, blocks):
        """The stack of ``blocks`` (lists of layers sharing one :func:`_signature`), the
        last of which may stop short: its missing layers are identities
        (:func:`_as_identity` of the first block's), scanned but not in :meth:`blocks`."""
        first, pad = blocks[0], len(blocks[0]) - len(blocks[-1])
        blocks = [*blocks[:-1], [*blocks[-1], *map(_as_identity, first[len(first) - pad :])]]
        fields = tuple(layer._INDEX_FIELDS for layer in first)
        indices = tuple(tuple(np.stack([getattr(block[j], name) for block in blocks])
                              for name in names) for j, names in enumerate(fields))  # fmt: skip
        blank = [_blank(layer) for layer in first]
        groups = zip(*[jax.tree_util.tree_leaves(block) for block in blocks], strict=True)
        leaves = [jnp.stack(group) for group in groups]
        tree = jax.tree_util.tree_structure(blank)
        return cls(leaves, tree, fields, indices, len(blocks), pad)

    def blocks(self):
        """The repeats as lists of layers, each weight a slice of the stacked one; the last
        without its ``pad`` identities."""
        blocks = [_block(self.tree, self.fields, [leaf[k] for leaf in self.leaves],
                         [[value[k] for value in values] for values in self.indices])
                  for k in range(self.count)]  # fmt: skip
        blocks[-1] = blocks[-1][: len(self.fields) - self.pad]
        return blocks

    def tree_flatten(self):
        static = {"tree": self.tree, "fields": self.fields, "indices": self.indices,
                  "count": self.count, "pad": self.pad}  # fmt: skip
        return (self.leaves,), _Static(static)

    @classmethod
    def tree_unflatten(cls, static, children):
        return cls(children[0], **static.items)


def _pack(layers):
    """``layers`` as the parts a flow stores: each run of repeated blocks (:func:`_runs`)
    one :class:`_Stack`, each other layer itself."""
    parts = []
    for start, period, count, pad in _runs(layers):
        if count == 1:
            parts.append(layers[start])
            continue
        end = start + period * count - pad
        starts = range(start, end, period)
        parts.append(_Stack.of([layers[k : min(k + period, end)] for k in starts]))
    return parts


def _unpack(parts):
    """The layers, first to last, of a flow's stored ``parts`` (:func:`_pack`)."""
    layers = []
    for part in parts:
        layers.extend(sum(part.blocks(), []) if isinstance(part, _Stack) else [part])
    return layers


def _through_parts(parts, x, total, forward, context=None):
    """``x`` through a flow's stored ``parts`` (:func:`_pack`; first to last, or for the
    inverse last to first), each log-det added to ``total``: a layer is called, a
    :class:`_Stack` is one ``jax.lax.scan`` over its stacked weights, so XLA compiles the
    block once (benchmarks/jax_scan.py times the forms)."""
    for part in parts if forward else parts[::-1]:
        if not isinstance(part, _Stack):
            x, log_det = part._through(x, forward, context)
            total = total + log_det
            continue
        step = _scan_step(part.tree, part.fields, forward)
        (x, total, _), _ = jax.lax.scan(step, (x, total, context), (part.leaves, part.indices),
                                        length=part.count, reverse=not forward)  # fmt: skip
    return x, total


def _copied(obj):
    """A shallow copy of a layer or flow (the same arrays, a new object)."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    return new


class _Sequence:
    """What a flow of layers shares: how it stores them and runs through them.

    The flow stores its layers as *parts* (:func:`_pack`): each run of at least two
    repeated blocks of layers (a coupling and its permutation, say) as one
    :class:`_Stack` whose weights are stacked on a leading axis, as flowjax stores its
    layers (the start of one more block after them, a last coupling, joins the stack
    padded with identities: :func:`_runs`); its pytree leaves are the parts' arrays. So
    inside a trace (``jax.jit``, ``jax.grad``, ``jax.vmap``) each run is one
    ``jax.lax.scan`` over the weights as stored, and a gradient or an optimizer's update
    keeps that layout: no step restacks them. ``layers`` is a view, the layers one by
    one, each weight a slice of its stack, made on first access and kept while its
    arrays are concrete. Assigning ``layers`` a new sequence of layers replaces them
    (``flow.layers[i] = ...`` is refused: the view is a tuple). Eagerly (no input,
    context or weight traced) the layers run one by one.
    """

    @property
    def layers(self):
        layers = self.__dict__.get("_layers")
        if layers is None:
            layers = tuple(_unpack(self.__dict__["_parts"]))
            if not _traced(jax.tree_util.tree_leaves(list(layers))):
                self.__dict__["_layers"] = layers
        return layers

    @layers.setter
    def layers(self, layers):
        self.__dict__["_layers"] = tuple(layers)
        self.__dict__.pop("_parts", None)

    def _packed(self):
        """The stored parts (:func:`_pack`), packed from the layers on first need and kept
        while their arrays are concrete (no tracer is kept past its trace)."""
        parts = self.__dict__.get("_parts")
        if parts is None:
            parts = _pack(list(self.__dict__["_layers"]))
            if not _traced(jax.tree_util.tree_leaves(parts)):
                self.__dict__["_parts"] = parts
        return parts

    def _through_all(self, x, total, forward, context=None):
        """``x`` through the layers, each log-det added to ``total``: one by one eagerly,
        by the stored parts (:func:`_through_parts`) inside a trace."""
        source = self.__dict__.get("_layers", self.__dict__.get("_parts"))
        if _traced([x, context, *jax.tree_util.tree_leaves(list(source))]):
            return _through_parts(self._packed(), x, total, forward, context)
        for layer in self.layers if forward else self.layers[::-1]:
            x, log_det = layer._through(x, forward, context)
            total = total + log_det
        return x, total

    def _tree_flatten(self):
        """The pytree children: the stored parts (and the context embedding, if any)."""
        has_embedding = "embedding" in self.__dict__
        own = ("_layers", "_parts", "embedding")
        static = {k: v for k, v in self.__dict__.items() if k not in own}
        children = (self._packed(), self.embedding) if has_embedding else (self._packed(),)
        return children, _Static(static)

    @classmethod
    def _tree_unflatten(cls, static, children):
        new = object.__new__(cls)
        new.__dict__.update(static.items)
        new.__dict__["_parts"] = list(children[0])
        if len(children) > 1:
            new.embedding = children[1]
        return new


class Flow(_Sequence, _Layer):
    """The layers applied first to last; log-dets add up. A pytree whose leaves are the
    weights as :class:`_Sequence` stores them."""

    def __init__(self, layers):
        first = layers[0]
        super().__init__(first.event_shape, layers[-1].output_shape, first.dtype)
        self.layers = list(layers)

    def _forward_with_log_det(self, x):
        return self._through_all(x, _zeros_batch(x, self.event_shape), True)

    def _inverse_with_log_det(self, y):
        return self._through_all(y, _zeros_batch(y, self.output_shape), False)

    def _forward_training(self, x):
        total, state = _zeros_batch(x, self.event_shape), {}
        for i, layer in enumerate(self.layers):
            x, log_det, updates = layer.forward_training(x)
            total = total + log_det
            state.update({f"layers.{i}.{name}": value for name, value in updates.items()})
        return x, total, state


def neutral_params(flow):
    """{neutral name: array} of a flow made by build_flow: the context embedding's first,
    where the flow has one, then each layer's."""
    params = {}
    embedding = getattr(flow, "embedding", None)
    if embedding is not None:
        for name, value in embedding.neutral_params().items():
            params[f"context_embedding.{name}"] = value
    for i, layer in enumerate(flow.layers):
        for name, value in layer.neutral_params().items():
            params[f"layers.{i}.{name}"] = value
    return params


def replace(flow, params):
    """A new flow: ``flow`` with the arrays of ``params`` (neutral names -> arrays, some or
    all of the flow's, such as the state ``forward_training`` returns) in its dtype; the
    flow itself is unchanged. Works on traced values too (inside ``jax.jit``)."""
    extra = sorted(params.keys() - neutral_params(flow).keys())
    if extra:
        raise KeyError(f"params do not fit the flow: unexpected {extra}")
    new = _copied(flow)
    per_layer = _per_layer(params, len(flow.layers))
    pairs = enumerate(zip(flow.layers, per_layer, strict=True))
    new.layers = [_replaced(layer, mine, f"layers.{i}.") for i, (layer, mine) in pairs]
    if "embedding" in flow.__dict__:
        head = "context_embedding."
        mine = {k[len(head) :]: v for k, v in params.items() if k.startswith(head)}
        new.embedding = _replaced(flow.embedding, mine, head)
    return new


def _replaced(part, mine, prefix):
    """``part`` (a layer or the context embedding) with ``mine`` (its local neutral names
    -> arrays of real numbers, cast to its dtype) in its dtype: a new object, or ``part``
    itself when ``mine`` is empty. A value that is not an array of real numbers, or of
    another shape, is refused naming the parameter (``{prefix}{name}``)."""
    if not mine:
        return part
    local = part.neutral_params()
    for name, value in mine.items():
        if not isinstance(value, jax.Array):
            try:
                value = np.asarray(value)
            except (TypeError, ValueError):  # NumPy's "inhomogeneous shape"
                raise ValueError(f"{prefix}{name}: expected an array, got a ragged "
                                 f"{type(value).__name__}") from None  # fmt: skip
        kind = np.dtype(value.dtype)
        if not (jnp.issubdtype(kind, jnp.floating) or jnp.issubdtype(kind, jnp.integer)):
            raise TypeError(f"{prefix}{name}: expected real numbers, got dtype {kind}")
        value = jnp.asarray(value, part.dtype)
        if value.shape != local[name].shape:
            raise ValueError(f"{prefix}{name}: expected shape {local[name].shape}, got "
                             f"{value.shape}")  # fmt: skip
        local[name] = value
    new = _copied(part)
    new._restore(local)
    return new


def load_neutral_params(flow, params):
    """``flow`` with every weight taken from ``params`` (neutral names -> arrays), checking
    names and shapes: a new flow (JAX arrays are not written in place)."""
    own = neutral_params(flow)
    missing, extra = sorted(own.keys() - params.keys()), sorted(params.keys() - own.keys())
    if missing or extra:
        raise KeyError(f"params do not fit the flow: missing {missing}, unexpected {extra}")
    return replace(flow, params)


class ConditionalFlow(_Sequence, _ConditionalLayer):
    """The layers applied first to last, each that reads the context given it; log-dets
    add up."""

    def __init__(self, layers, context_dim):
        super().__init__(layers[0].event_shape, context_dim, layers[0].dtype)
        self.layers = list(layers)

    def _forward_with_log_det(self, x, context):
        total = _zeros_batch(x, self.event_shape)
        return self._through_all(x, total, True, context)

    def _inverse_with_log_det(self, y, context):
        total = _zeros_batch(y, self.output_shape)
        return self._through_all(y, total, False, context)

    def _forward_training(self, x, context):
        total, state = _zeros_batch(x, self.event_shape), {}
        for i, layer in enumerate(self.layers):
            given = (context,) if isinstance(layer, _ConditionalLayer) else ()
            x, log_det, updates = layer.forward_training(x, *given)
            total = total + log_det
            state.update({f"layers.{i}.{name}": value for name, value in updates.items()})
        return x, total, state


class EmbeddedFlow(ConditionalFlow):
    """The flow behind its context embedding: each call embeds the context once
    (``self.embedding``) and the layers read the features."""

    def __init__(self, layers, embedding):
        super().__init__(layers, embedding.context_dim)
        self.embedding = embedding

    def _forward_with_log_det(self, x, context):
        return super()._forward_with_log_det(x, self.embedding(context))

    def _inverse_with_log_det(self, y, context):
        return super()._inverse_with_log_det(y, self.embedding(context))

    def _forward_training(self, x, context):
        return super()._forward_training(x, self.embedding(context))
