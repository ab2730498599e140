"""The tfp backend's prelude: what every generated tfp module needs at run time, as
real code (imported, linted and tested here) that flowbridge.codegen inlines into each
generated module, definition by definition, from this source."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors


def _batch_mean(x, event_ndims):
    """The mean per channel of an image (C, H, W) or per entry of a vector, over every
    batch dimension (and H, W): (C,)."""
    flat = tf.reshape(x, tf.concat([[-1], tf.shape(x)[tf.rank(x) - event_ndims :]], 0))
    return tf.reduce_mean(flat, axis=[0, 2, 3] if event_ndims == 3 else 0)


def _broadcast_batch(context, like, event_ndims):
    """``context`` (*b, C) broadcast to the batch shape of ``like``: (*batch, C)."""
    batch = tf.shape(like)[: tf.rank(like) - event_ndims]
    return tf.broadcast_to(context, tf.concat([batch, tf.shape(context)[-1:]], 0))


def _bucket(edges, x, last):
    """The bin of x among edges (..., K + 1): sum(x >= edges) - 1, clamped into [0, last]."""
    count = tf.math.count_nonzero(x[..., None] >= edges, axis=-1, dtype=tf.int32)
    return tf.clip_by_value(count - 1, 0, last)


def _repeat(step, count, state, *args):
    """``state = step(state, *args)``, ``count`` times, as a ``tf.while_loop`` (one loop op
    in a graph, however large ``count``): an autoregressive layer's D-pass direction."""
    (state,) = tf.while_loop(lambda s: tf.constant(True), lambda s: (step(s, *args),),
                             (state,), maximum_iterations=count)  # fmt: skip
    return state


def _gather(values, index):
    """values[..., index] along the last axis: values (..., K), index (...) of integers,
    their leading dims broadcast (as a one-hot product: broadcasting for free, and the
    values here are finite)."""
    return tf.reduce_sum(values * tf.one_hot(index, tf.shape(values)[-1], dtype=values.dtype), -1)


def _pad_last(x, before, after, value):
    """x with ``before`` and ``after`` entries of ``value`` added along the last axis."""
    return tf.pad(x, [[0, 0]] * (x.shape.rank - 1) + [[before, after]], constant_values=value)


def _reshape(x, ndims, shape):
    """x with its last ``ndims`` dims reshaped to ``shape``."""
    return tf.reshape(x, tf.concat([tf.shape(x)[:-ndims], shape], 0))


def _transpose_last(x, perm):
    """x with its last ``len(perm)`` dims permuted (result dim i is dim ``perm[i]``)."""
    lead = x.shape.rank - len(perm)
    return tf.transpose(x, list(range(lead)) + [lead + i for i in perm])


def _clamp_straight_through(x, low, high):
    """clamp(x, low, high) in value, exact at any magnitude; gradient 1 (straight through)."""
    return tf.stop_gradient(tf.clip_by_value(x, low, high)) + (x - tf.stop_gradient(x))


def _conv(sizes, kernel_size, init, dtype, weights=None):
    """Convolutions sizes[0] -> ... -> sizes[-1] channels, kernels (k, k, in, out) (TF's
    layout, the neutral one), each weight started by its bound in ``init`` unless
    ``weights`` (neutral local names -> arrays) gives its initial value."""
    kernels, biases = [], []
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        shape = [kernel_size, kernel_size, n_in, n_out]
        kernel = _initial(weights, init, f"conditioner.{j}.kernel", shape, dtype)
        bias = _initial(weights, init, f"conditioner.{j}.bias", [n_out], dtype)
        kernels.append(tf.Variable(kernel, name=f"kernel_{j}"))
        biases.append(tf.Variable(bias, name=f"bias_{j}"))
    return kernels, biases


def _channels_last(x):
    """(*batch, C, H, W) -> (*batch, H, W, C)."""
    lead = len(x.shape) - 3
    return tf.transpose(x, list(range(lead)) + [lead + 1, lead + 2, lead])


def _channels_first(x):
    """(*batch, H, W, C) -> (*batch, C, H, W)."""
    lead = len(x.shape) - 3
    return tf.transpose(x, list(range(lead)) + [lead + 2, lead, lead + 1])


def _conv2d_last(x, kernel, bias):
    """Stride-1 "same" convolution of x (*batch, H, W, C_in), channels last (tf.nn.conv2d's
    layout on the CPU), with a (k, k, C_in, C_out) kernel: (*batch, H, W, C_out)."""
    shape = tf.shape(x)
    flat = tf.reshape(x, tf.concat([[-1], shape[-3:]], 0))
    out = tf.nn.conv2d(flat, kernel, 1, "SAME") + bias
    return tf.reshape(out, tf.concat([shape[:-3], tf.shape(out)[1:]], 0))


def _conv2d(x, kernel, bias):
    """Stride-1 "same" convolution of x (*batch, C_in, H, W) with a (k, k, C_in, C_out)
    kernel: (*batch, C_out, H, W). tf.nn.conv2d runs channels last on the CPU, so x is
    transposed in and out (a conditioner made of convolutions transposes once at each
    end instead: the emitter's ``CONV_LAYOUT``)."""
    return _channels_first(_conv2d_last(_channels_last(x), kernel, bias))


def _squeeze2x2(x):
    """(*batch, C, H, W) -> (*batch, 4C, H/2, W/2): y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]."""
    c, height, width = x.shape[-3:]
    y = tf.reshape(x, [-1, c, height // 2, 2, width // 2, 2])
    y = tf.transpose(y, [0, 1, 3, 5, 2, 4])
    return tf.reshape(y, tf.concat([tf.shape(x)[:-3], [4 * c, height // 2, width // 2]], 0))


def _unsqueeze2x2(y):
    """The inverse of a 2x2 squeeze: (*batch, 4C, H/2, W/2) -> (*batch, C, H, W)."""
    c4, height, width = y.shape[-3:]
    x = tf.reshape(y, [-1, c4 // 4, 2, 2, height, width])
    x = tf.transpose(x, [0, 1, 4, 2, 5, 3])
    return tf.reshape(x, tf.concat([tf.shape(y)[:-3], [c4 // 4, 2 * height, 2 * width]], 0))


def _moved_shape(shape, old, new):
    """A TensorShape whose trailing ``old`` event shape is replaced by ``new``."""
    if shape.rank is None:
        return tf.TensorShape(None)
    return shape[: shape.rank - len(old)].concatenate(new)


def _moved_shape_tensor(shape, old, new):
    """The same for a shape tensor."""
    return tf.concat([shape[: tf.size(shape) - len(old)], tf.constant(new, shape.dtype)], 0)


def _initial(weights, init, name, shape, dtype):
    """A weight's initial value: ``weights[name]`` when given (so the values hold in TF1
    graph mode too, where an assign made after the variable is never run), else uniform
    in +-init[name], or zeros where that bound is 0 (PARAM_INIT)."""
    if weights is not None and name in weights:
        return tf.cast(weights[name], dtype)
    if init[name] == 0.0:
        return tf.zeros(shape, dtype=dtype)
    return tf.random.uniform(shape, -init[name], init[name], dtype=dtype)


def _identity(weights, init, name, shape, dtype):
    """A square matrix's initial value (an LU factorisation's packed factors):
    ``weights[name]`` when given, else the identity plus uniform in +-init[name] where that
    bound is not 0 (PARAM_INIT)."""
    if weights is not None and name in weights:
        return tf.cast(weights[name], dtype)
    return tf.eye(shape[0], dtype=dtype) + _initial(None, init, name, shape, dtype)


def _dense(sizes, init, dtype, weights=None, prefix="conditioner."):
    """Dense layers sizes[0] -> ... -> sizes[-1], kernels (in, out), each weight started
    by its bound in ``init`` (the layer's entries of PARAM_INIT, named {prefix}{j}.*)
    unless ``weights`` (neutral local names -> arrays) gives its initial value."""
    kernels, biases = [], []
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        kernel = _initial(weights, init, f"{prefix}{j}.kernel", [n_in, n_out], dtype)
        bias = _initial(weights, init, f"{prefix}{j}.bias", [n_out], dtype)
        kernels.append(tf.Variable(kernel, name=f"kernel_{j}"))
        biases.append(tf.Variable(bias, name=f"bias_{j}"))
    return kernels, biases


class _Memo:
    """The last (input, log-det) pair of one direction; not tracked by tf.Module."""

    __slots__ = ("forward", "inverse")

    def __init__(self):
        self.forward = self.inverse = None


def _checked(layer, value, name, event):
    """``value`` as a tensor if it is real floating of shape (*batch, *event) in the
    layer's dtype; else a TypeError or ValueError naming the expected shape."""
    where = f"{type(layer).__name__}: {name}"
    if isinstance(value, tf.Tensor) or hasattr(value, "dtype") and hasattr(value, "shape"):
        dtype = tf.as_dtype(value.dtype)
        if not dtype.is_floating:
            raise TypeError(
                f"{where}: expected a real floating-point tensor, got dtype {dtype.name}"
            )
    value = tf.convert_to_tensor(value, dtype_hint=layer.dtype)
    if value.dtype != layer.dtype:
        raise TypeError(
            f"{where}: expected dtype {layer.dtype.name} (the layer's), got {value.dtype.name}"
        )
    shape = value.shape
    want = ", ".join(["*batch", *map(str, event)])
    if shape.rank is not None:
        tail = tuple(shape[shape.rank - len(event) :]) if shape.rank >= len(event) else None
        if tail is None or any(n is not None and n != e for n, e in zip(tail, event, strict=True)):
            raise ValueError(f"{where}: expected shape ({want}), got {tuple(shape)}")
        if all(n is not None for n in tail):
            return value
    with tf.control_dependencies([
        tf.debugging.assert_equal(tf.shape(value)[-len(event) :], tf.constant(event),
                                  message=f"{where}: expected shape ({want})")
    ]):  # fmt: skip
        return tf.identity(value)


def _batched(fn, value, event_shape):
    """``fn`` on a (batch, *event) view when ``value`` is a single event or of unknown
    rank (matmul needs a batch axis); results reshaped back to ``value``'s batch."""
    rank = value.shape.rank
    if rank is not None and rank > len(event_shape):
        return fn(value)
    out, log_det = fn(tf.reshape(value, [-1, *event_shape]))
    batch = tf.shape(value)[: tf.rank(value) - len(event_shape)]
    out = tf.reshape(out, tf.concat([batch, tf.shape(out)[1:]], 0))
    return out, log_det if log_det.shape.rank == 0 else tf.reshape(log_det, batch)


def _refuse_non_real(owner, value, name):
    """TFP casts a NumPy input to the bijector's dtype before a bijector sees it, a
    complex one (dropping the imaginary part, with only a warning) or a boolean one too:
    refuse such inputs at the public call instead."""
    dtype = getattr(value, "dtype", None)
    if dtype is None and not isinstance(value, (int, float)):
        dtype = tf.convert_to_tensor(value).dtype
    dtype = None if dtype is None else tf.as_dtype(dtype)
    if dtype is not None and not (dtype.is_floating or dtype.is_integer):
        raise TypeError(
            f"{type(owner).__name__}: {name}: expected real numbers, got dtype {dtype.name}"
        )
    door = getattr(owner, "_fb_door", None)  # an image flow's event shapes, in its layout
    shape = getattr(value, "shape", None)
    if door is not None and shape is not None and tf.TensorShape(shape).rank is not None:
        (shapes, layout), shape = door, tuple(tf.TensorShape(shape))
        event = shapes[0] if name == "x" else shapes[1]
        tail = shape[-3:]
        wrong = [n is not None and n != e for n, e in zip(tail, event, strict=False)]
        if len(tail) < 3 or any(wrong):
            want = ", ".join(["*batch", *map(str, event)])
            where = f"{type(owner).__name__}: {name}"
            raise ValueError(f"{where}: expected shape ({want}) ({layout}), got {shape}")


class _RealInputs:
    """Public bijector calls that refuse non-real inputs before TFP converts them."""

    def forward(self, x, name="forward", **kwargs):
        _refuse_non_real(self, x, "x")
        return super().forward(x, name=name, **kwargs)

    def inverse(self, y, name="inverse", **kwargs):
        _refuse_non_real(self, y, "y")
        return super().inverse(y, name=name, **kwargs)

    def forward_log_det_jacobian(
        self, x, event_ndims=None, name="forward_log_det_jacobian", **kwargs
    ):
        _refuse_non_real(self, x, "x")
        return super().forward_log_det_jacobian(x, event_ndims=event_ndims, name=name, **kwargs)

    def inverse_log_det_jacobian(
        self, y, event_ndims=None, name="inverse_log_det_jacobian", **kwargs
    ):
        _refuse_non_real(self, y, "y")
        return super().inverse_log_det_jacobian(y, event_ndims=event_ndims, name=name, **kwargs)


class FlowChain(_RealInputs, tfb.Chain):
    """The flow: a tfb.Chain of the layers whose public calls refuse non-real inputs and
    run the layers in one pass.

    ``forward``, ``inverse`` and their log-dets check the input once (at the first
    layer), call each layer's traced body in one loop and sum the log-dets as they come,
    where a plain Chain calls every layer through its own cache and then walks the layers
    again for the log-det. The log-det is kept in TFP's own cache beside the output (the
    attributes TFP's bijector cache holds for an input/output pair, as ``tfb.FFJORD``
    keeps its log-det), so ``inverse(y)`` then ``inverse_log_det_jacobian(y)`` (what
    ``TransformedDistribution.log_prob`` asks) runs the flow once, in eager mode too, and
    for as long as TFP would hand back the cached output itself. The layers stay what
    they are: ``flow.bijectors[i]`` is a full bijector with its own calls and cache."""

    def _forward(self, x, **kwargs):
        return self._one_pass(x, True, kwargs)

    def _inverse(self, y, **kwargs):
        return self._one_pass(y, False, kwargs)

    def _forward_log_det_jacobian(self, x, event_ndims, **kwargs):
        return self._log_det(x, event_ndims, True, kwargs)

    def _inverse_log_det_jacobian(self, y, event_ndims, **kwargs):
        return self._log_det(y, event_ndims, False, kwargs)

    def _log_det(self, value, event_ndims, forward, kwargs):
        """The log-det at ``value`` over ``event_ndims`` event dims: the one cached with
        the output TFP holds for ``value``, else one pass (which caches both)."""
        ndims = tf.get_static_value(event_ndims)  # an int, a NumPy int, or None (dynamic)
        ndims = int(ndims) if ndims is not None and getattr(ndims, "ndim", 0) == 0 else None
        least = self.forward_min_event_ndims if forward else self.inverse_min_event_ndims
        if ndims is None or ndims < least:  # TFP's own walk (and its errors)
            kwargs = self._layer_kwargs(kwargs)
            if forward:
                return super()._forward_log_det_jacobian(value, event_ndims, **kwargs)
            return super()._inverse_log_det_jacobian(value, event_ndims, **kwargs)
        # the output TFP holds for this input, else one pass (which caches it with its
        # log-det): the log-det is the output's, however old the input is
        (self._cache.forward if forward else self._cache.inverse)(value, **kwargs)
        attrs = self._cache.forward_attributes if forward else self._cache.inverse_attributes
        log_det = attrs(value, **kwargs).get("fldj" if forward else "ildj")
        if log_det is None:  # an output cached without its log-det: compute both again
            log_det = self._pass_with_log_det(value, forward, kwargs)[1]
        if ndims > least:  # the extra event dims are batch dims of the layers' log-det
            log_det = tf.reduce_sum(log_det, axis=list(range(least - ndims, 0)))
        return log_det

    def _layer_kwargs(self, kwargs):
        """The kwargs the layers take, from those the chain was given (the same here)."""
        return kwargs

    def _one_pass(self, value, forward, kwargs):
        """The output of one pass; its log-det goes into TFP's cache entry for ``value``
        (shared with the output's), where the next log-det call finds it."""
        out, log_det = self._pass_with_log_det(value, forward, kwargs)
        attrs = self._cache.forward_attributes if forward else self._cache.inverse_attributes
        attrs(value, **kwargs).update({"fldj": log_det if forward else -log_det,
                                       "ildj": -log_det if forward else log_det})  # fmt: skip
        return out

    def _pass_with_log_det(self, value, forward, kwargs):
        """``value`` through every bijector (the layers first to last, or for the inverse
        last to first), the input checked at the first layer only, each layer's body
        called directly: (output, summed log-det)."""
        kwargs = self._layer_kwargs(kwargs)
        total, context, first = 0.0, None, True
        for bij in list(reversed(self.bijectors)) if forward else self.bijectors:
            routed = kwargs.get(bij.name, {})
            if not isinstance(bij, _Layer):  # an image flow's layout transpose (log-det 0)
                value = bij.forward(value, **routed) if forward else bij.inverse(value, **routed)
                continue
            if first:
                event = bij.event_shape if forward else bij.output_shape
                value, first = _checked(bij, value, "x" if forward else "y", event), False
            if forward and bij.validate_args:
                value = _in_domain(bij, value, "x")
            value, log_det, context = bij._pass_body(forward, value, routed, context)
            total = total + log_det
        return value, total


def _in_domain(layer, value, name):
    """``value`` if every entry lies in the layer's ``domain_interval`` (None: the reals,
    nothing to check); else, run eagerly, a ValueError naming the layer, the input and
    the interval (a NaN lies in no interval); traced (tf.function, graph mode), a
    ``tf.debugging`` assertion with that message. Called only with ``validate_args``."""
    if layer.domain_interval is None:
        return value
    low, high = layer.domain_interval
    where = f"{type(layer).__name__}: {name}: expected values in [{low:g}, {high:g}]"
    where += " (the layer's domain)"
    outside = tf.logical_not((value >= low) & (value <= high))
    if tf.executing_eagerly():
        if bool(tf.reduce_any(outside)):
            bad = tf.boolean_mask(value, outside)
            count, size = int(tf.size(bad)), int(tf.size(value))
            raise ValueError(f"{where}, got {float(bad[0]):g} ({count} of {size} entries outside)")
        return value
    with tf.control_dependencies([
        tf.debugging.Assert(tf.logical_not(tf.reduce_any(outside)), [where])
    ]):  # fmt: skip
        return tf.identity(value)


class _Layer(_RealInputs, tfb.Bijector):
    """TFP plumbing shared by every layer: input checks, forward/inverse and both log-dets.

    Inputs are checked at the door (shape, dtype) and may have any batch rank, none
    included. A layer compares equal only to itself: TFP shares its caches between
    bijectors that compare equal, and two layers of one structure but other weights must
    never share results. TFP asks for a log-det separately from the transform it belongs
    to. Inside tf.function the log-det traced with the last forward (inverse) call is
    reused when TFP asks for it at that very tensor, so the conditioner is not traced
    twice; run eagerly, every call recomputes (a variable may have changed in between).
    A layer whose input is not any real vector (a logit's data in [0, 1]) says so in
    ``domain_interval``; with ``validate_args`` on, its input is checked against it."""

    domain_interval = None  # the closed interval every input entry lies in; None: the reals

    def _get_parameterization(self):
        if "_fb_identity" not in self.__dict__:
            object.__setattr__(self, "_fb_identity", object())
        return self.__dict__["_fb_identity"]

    def _pass_body(self, forward, value, routed, context):
        """FlowChain's pass through this layer: its traced body on a checked ``value``,
        (output, log-det, context); ``routed`` holds this layer's kwargs."""
        body = self._forward_with_log_det if forward else self._inverse_with_log_det
        out, log_det = _batched(body, value, self.event_shape if forward else self.output_shape)
        return out, log_det, context

    def forward_with_log_det(self, x):
        """(y, log|det dy/dx|) for x of shape (*batch, *event_shape)."""
        x = _checked(self, x, "x", self.event_shape)
        if self.validate_args:
            x = _in_domain(self, x, "x")
        return _batched(self._forward_with_log_det, x, self.event_shape)

    def inverse_with_log_det(self, y):
        """(x, log|det dx/dy|) for y of shape (*batch, *output_shape)."""
        y = _checked(self, y, "y", self.output_shape)
        return _batched(self._inverse_with_log_det, y, self.output_shape)

    def _memo(self):
        if "_fb_memo" not in self.__dict__:
            object.__setattr__(self, "_fb_memo", _Memo())
        return self.__dict__["_fb_memo"]

    def _forward(self, x):
        y, log_det = self.forward_with_log_det(x)
        # kept eagerly too in training mode: a second forward would move its averages again
        kept = not tf.executing_eagerly() or getattr(self, "training", False)
        self._memo().forward = (x, y, log_det) if kept else None
        return y

    def _inverse(self, y):
        x, log_det = self.inverse_with_log_det(y)
        self._memo().inverse = None if tf.executing_eagerly() else (y, x, log_det)
        return x

    def _forward_log_det_jacobian(self, x):
        memo = self._memo()
        if memo.forward is not None and memo.forward[0] is x:
            return memo.forward[2]
        if memo.inverse is not None and memo.inverse[1] is x:
            return -memo.inverse[2]
        return self.forward_with_log_det(x)[1]

    def _inverse_log_det_jacobian(self, y):
        memo = self._memo()
        if memo.inverse is not None and memo.inverse[0] is y:
            return memo.inverse[2]
        if memo.forward is not None and memo.forward[1] is y:
            return -memo.forward[2]
        return self.inverse_with_log_det(y)[1]


def _checked_context(layer, context, x=None):
    """``context`` as a tensor in the layer's dtype if it is real floating of shape
    (*batch, context_dim) whose batch broadcasts to x's (where shapes are known; without
    x, a context embedding's input, no batch to match yet); else a TypeError or
    ValueError naming both sizes."""
    where = f"{type(layer).__name__}: conditional_input"
    if context is None:
        raise TypeError(f"{where}: this layer reads a context; pass conditional_input=")
    dtype = tf.as_dtype(context.dtype) if hasattr(context, "dtype") else None
    if dtype is not None and not dtype.is_floating:
        raise TypeError(f"{where}: expected a real floating-point tensor, got {dtype.name}")
    context = tf.convert_to_tensor(context, dtype_hint=layer.dtype)
    if context.dtype != layer.dtype:
        raise TypeError(
            f"{where}: expected dtype {layer.dtype.name} (the layer's), got {context.dtype.name}"
        )
    shape, want = context.shape, f"(*batch, {layer.context_dim}) (the flow's context_dim)"
    if shape.rank == 0 or (shape.rank is not None and shape[-1] not in (None, layer.context_dim)):
        raise ValueError(f"{where}: expected shape {want}, got {tuple(shape)}")
    rank = None if x is None else x.shape.rank
    if shape.rank is not None and rank is not None:
        batch = x.shape[: rank - len(layer.event_shape)]
        try:
            fits = tf.broadcast_static_shape(shape[:-1], batch).as_list() == batch.as_list()
        except ValueError:
            fits = False
        if not fits and shape[:-1].is_fully_defined() and batch.is_fully_defined():
            raise ValueError(
                f"{where}: its batch shape {tuple(shape[:-1])} does not broadcast to the "
                f"input's {tuple(batch)}"
            )
    return context


def _same(entry, at, value, context):
    """Whether a memo entry holds this very ``value`` at ``at``, at this very context."""
    return entry is not None and entry[at] is value and entry[1] is context


class _ConditionalLayer(_Layer):
    """A layer that reads the context, TFP's ``conditional_input``, in every call. Inside
    tf.function its log-det memo is keyed on the input and the context together."""

    def _pass_body(self, forward, value, routed, context):
        """FlowChain's pass through this layer: the context (``conditional_input`` in
        ``routed``) is checked at the first layer that reads it and given on (``context``)."""
        if context is None:
            context = _checked_context(self, routed.get("conditional_input"), value)
        rows = self._rows(context, value)
        body = self._forward_with_log_det if forward else self._inverse_with_log_det
        event = self.event_shape if forward else self.output_shape
        out, log_det = _batched(lambda v: body(v, rows), value, event)
        return out, log_det, context

    def forward_with_log_det(self, x, context):
        """(y, log|det dy/dx|) for x (*batch, *event_shape), context (*batch, context_dim)."""
        x = _checked(self, x, "x", self.event_shape)
        context = self._rows(_checked_context(self, context, x), x)
        return _batched(lambda v: self._forward_with_log_det(v, context), x, self.event_shape)

    def inverse_with_log_det(self, y, context):
        """(x, log|det dx/dy|) for y (*batch, *event_shape), context (*batch, context_dim)."""
        y = _checked(self, y, "y", self.output_shape)
        context = self._rows(_checked_context(self, context, y), y)
        return _batched(lambda v: self._inverse_with_log_det(v, context), y, self.event_shape)

    def _rows(self, context, value):
        """The context as one row per row of _batched's (-1, *event) view of ``value``
        when that view is taken for an input of unknown rank; else as it is."""
        if value.shape.rank is not None:
            return context
        batch = tf.shape(value)[: tf.rank(value) - len(self.event_shape)]
        wide = tf.broadcast_to(context, tf.concat([batch, [self.context_dim]], 0))
        return tf.reshape(wide, [-1, self.context_dim])

    def _forward(self, x, conditional_input=None):
        y, log_det = self.forward_with_log_det(x, conditional_input)
        traced = not tf.executing_eagerly()
        self._memo().forward = (x, conditional_input, y, log_det) if traced else None
        return y

    def _inverse(self, y, conditional_input=None):
        x, log_det = self.inverse_with_log_det(y, conditional_input)
        traced = not tf.executing_eagerly()
        self._memo().inverse = (y, conditional_input, x, log_det) if traced else None
        return x

    def _forward_log_det_jacobian(self, x, conditional_input=None):
        memo, context = self._memo(), conditional_input
        if _same(memo.forward, 0, x, context):
            return memo.forward[3]
        if _same(memo.inverse, 2, x, context):
            return -memo.inverse[3]
        return self.forward_with_log_det(x, context)[1]

    def _inverse_log_det_jacobian(self, y, conditional_input=None):
        memo, context = self._memo(), conditional_input
        if _same(memo.inverse, 0, y, context):
            return memo.inverse[3]
        if _same(memo.forward, 2, y, context):
            return -memo.forward[3]
        return self.inverse_with_log_det(y, context)[1]


class ConditionalFlowChain(FlowChain):
    """The conditional flow: ``conditional_input=`` given to any call (or in a
    TransformedDistribution's ``bijector_kwargs``) goes to every layer that reads it."""

    def _routed(self, kwargs):
        context = kwargs.pop("conditional_input", None)
        if context is not None:
            for layer in self.bijectors:
                if isinstance(layer, _ConditionalLayer):
                    kwargs[layer.name] = {"conditional_input": context}
        return kwargs

    def forward(self, x, name="forward", **kwargs):
        return super().forward(x, name=name, **self._routed(kwargs))

    def inverse(self, y, name="inverse", **kwargs):
        return super().inverse(y, name=name, **self._routed(kwargs))

    def forward_log_det_jacobian(
        self, x, event_ndims=None, name="forward_log_det_jacobian", **kwargs
    ):
        return super().forward_log_det_jacobian(
            x, event_ndims=event_ndims, name=name, **self._routed(kwargs)
        )

    def inverse_log_det_jacobian(
        self, y, event_ndims=None, name="inverse_log_det_jacobian", **kwargs
    ):
        return super().inverse_log_det_jacobian(
            y, event_ndims=event_ndims, name=name, **self._routed(kwargs)
        )


class EmbeddedFlowChain(ConditionalFlowChain):
    """The conditional flow behind its context embedding: ``conditional_input=`` goes
    through ``self.embedding`` once per pass and its features to every layer that reads
    a context. TFP's cache is keyed on the context given (not on its features, computed
    anew in each pass), so ``log_prob``'s inverse and log-det still run the flow once."""

    def __init__(self, bijectors, embedding, validate_args=False, name=None):
        parameters = dict(locals())
        super().__init__(bijectors, validate_args=validate_args, parameters=parameters, name=name)
        self.embedding = embedding

    def _layer_kwargs(self, kwargs):
        given = [k["conditional_input"] for k in kwargs.values()
                 if isinstance(k, dict) and k.get("conditional_input") is not None]  # fmt: skip
        if not given:
            return kwargs
        features = self.embedding(given[0])
        return {name: {**k, "conditional_input": features} if isinstance(k, dict) and
                "conditional_input" in k else k for name, k in kwargs.items()}  # fmt: skip


class _MovesShape:
    """The event-shape methods of a layer whose output event shape differs from its
    input's (``self.event_shape`` in, ``self.output_shape`` out)."""

    def _forward_event_shape(self, input_shape):
        return _moved_shape(input_shape, self.event_shape, self.output_shape)

    def _forward_event_shape_tensor(self, input_shape):
        return _moved_shape_tensor(input_shape, self.event_shape, self.output_shape)

    def _inverse_event_shape(self, output_shape):
        return _moved_shape(output_shape, self.output_shape, self.event_shape)

    def _inverse_event_shape_tensor(self, output_shape):
        return _moved_shape_tensor(output_shape, self.output_shape, self.event_shape)


def _checked_layout(data_format):
    """``data_format`` if it is one build_flow knows; else a ValueError."""
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            f"data_format: expected 'channels_last' or 'channels_first', got {data_format!r}"
        )
    return data_format


def _in_layout(layers, data_format):
    """The chain's bijectors (the layers reversed) for data in ``data_format``: for
    (*batch, H, W, C), a transpose at each end (the layers compute (C, H, W))."""
    bijectors = list(reversed(layers))
    if data_format == "channels_last":
        bijectors = [tfb.Transpose(perm=[1, 2, 0]), *bijectors, tfb.Transpose(perm=[2, 0, 1])]
    return bijectors


def _with_door(flow, shapes, data_format):
    """``flow`` whose public calls check inputs against the event ``shapes`` (in, out),
    given channels first, in ``data_format``."""
    if data_format == "channels_last":
        shapes = tuple((h, w, c) for c, h, w in shapes)
    flow._fb_door = (shapes, data_format)
    return flow


def layers_of(flow):
    """The layers of a flow made by build_flow, in application order (without an image
    flow's layout transposes)."""
    return [b for b in reversed(flow.bijectors) if not isinstance(b, tfb.Transpose)]


def neutral_params(flow):
    """{neutral name: tf.Variable} of a flow made by build_flow: the context embedding's
    first, where the flow has one, then each layer's."""
    params = {}
    embedding = getattr(flow, "embedding", None)
    if embedding is not None:
        for name, value in embedding.neutral_params().items():
            params[f"context_embedding.{name}"] = value
    for i, layer in enumerate(layers_of(flow)):
        for name, value in layer.neutral_params().items():
            params[f"layers.{i}.{name}"] = value
    return params


def load_neutral_params(flow, params):
    """Assign ``params`` (neutral names -> arrays) to ``flow``, checking names and shapes."""
    own = neutral_params(flow)
    missing, extra = sorted(own.keys() - params.keys()), sorted(params.keys() - own.keys())
    if missing or extra:
        raise KeyError(f"params do not fit the flow: missing {missing}, unexpected {extra}")
    for name, target in own.items():
        value = tf.cast(params[name], target.dtype)
        if tuple(value.shape) != tuple(target.shape):
            got, want = tuple(value.shape), tuple(target.shape)
            raise ValueError(f"{name}: expected shape {want}, got {got}")
        target.assign(value)
    return flow
