"""TFP emitter: IR ops as TensorFlow calls, layers as ``tfb.Bijector`` subclasses."""

from __future__ import annotations

from ...codegen import (
    block,
    call,
    changes_shape,
    embed_methods,
    neutral_params_function,
    neutral_params_method,
    signature,
    traced_methods,
)
from ...layers import Plan

TITLE = "TensorFlow Probability bijectors"
IMAGE_SHAPES = """Shapes: images are (*batch, H, W, C) (build_flow's default data_format="channels_last")
or (*batch, C, H, W) (data_format="channels_first"); log-dets are (*batch,). Each layer
computes channels first (the neutral layout) and takes (*batch, C, H, W): the flow puts a
tfb.Transpose at each end for channels-last data."""
USAGE = """Use: flow = build_flow(params, dtype=tf.float32); flow.forward(x); flow.inverse(y);
flow.forward_log_det_jacobian(x, event_ndims={event_ndims}). The flow is a tfb.Chain whose layers
apply in PARAM_SHAPES order (the Chain lists them reversed); every weight is a
tf.Variable in flow.trainable_variables. Layers with a constant Jacobian return a
scalar log-det, which TFP broadcasts over the batch."""

IMPORTS = """import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors"""

#: IR op -> TensorFlow expression; ``{0}``, ``{1}`` are arguments, ``{name}`` attributes.
#: ``batch_fill``/``batch_zeros`` return scalars: they occur only where the log-det is
#: the same for every example of a call (constant-Jacobian layers, whose log-det TFP
#: caches once, and a batch norm), and TFP broadcasts a scalar over any batch.
OPS = {
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "neg": "-{0}",
    "exp": "tf.exp({0})",
    "log": "tf.math.log({0})",
    "tanh": "tf.tanh({0})",
    "sigmoid": "tf.sigmoid({0})",
    "log_sigmoid": "tf.math.log_sigmoid({0})",
    "clamp_st": "_clamp_straight_through({0}, {low}, {high})",
    "relu": "tf.nn.relu({0})",
    # tf.nn.leaky_relu keeps alpha as a float32 attribute (2e-10 off in float64)
    "leaky_relu": "tf.where({0} > 0, {0}, {negative_slope} * {0})",
    "elu": "tf.nn.elu({0})",
    "erf": "tf.math.erf({0})",
    "linear": "tf.linalg.matmul({0}, {1}) + {2}",
    "conv2d": "_conv2d({0}, {1}, {2})",
    "per_channel": "{0}[:, None, None]",
    "batch_mean": "_batch_mean({0}, {event_ndims})",
    "assign": "{0}.assign({1})",
    "squeeze2x2": "_squeeze2x2({0})",
    "unsqueeze2x2": "_unsqueeze2x2({0})",
    "slice": "{0}[{index}]",
    "take": "tf.gather({0}, {1}, axis={axis})",
    "concat": "tf.concat([{0}, {1}], axis={axis})",
    "broadcast_batch": "_broadcast_batch({0}, {1}, {event_ndims})",
    "sum_event": "tf.reduce_sum({0}, axis={axes})",
    "sum_all": "tf.reduce_sum({0})",
    "batch_fill": "tf.identity({0})",
    "batch_zeros": "tf.zeros([], dtype={0}.dtype)",
}
OP_IMPORTS: dict[str, str] = {}
OP_HELPERS = {
    "batch_mean": '''def _batch_mean(x, event_ndims):
    """The mean per channel of an image (C, H, W) or per entry of a vector, over every
    batch dimension (and H, W): (C,)."""
    flat = tf.reshape(x, tf.concat([[-1], tf.shape(x)[tf.rank(x) - event_ndims :]], 0))
    return tf.reduce_mean(flat, axis=[0, 2, 3] if event_ndims == 3 else 0)''',
    "conv2d": '''def _conv(sizes, kernel_size, init, dtype, weights=None):
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


def _conv2d(x, kernel, bias):
    """Stride-1 "same" convolution of x (*batch, C_in, H, W) with a (k, k, C_in, C_out)
    kernel: (*batch, C_out, H, W). tf.nn.conv2d runs channels last on the CPU, so x is
    transposed in and out."""
    shape = tf.shape(x)
    flat = tf.reshape(x, tf.concat([[-1], shape[-3:]], 0))
    out = tf.nn.conv2d(tf.transpose(flat, [0, 2, 3, 1]), kernel, 1, "SAME") + bias
    out = tf.transpose(out, [0, 3, 1, 2])
    return tf.reshape(out, tf.concat([shape[:-3], tf.shape(out)[1:]], 0))''',
    "squeeze2x2": '''def _squeeze2x2(x):
    """(*batch, C, H, W) -> (*batch, 4C, H/2, W/2): y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]."""
    c, height, width = x.shape[-3:]
    y = tf.reshape(x, [-1, c, height // 2, 2, width // 2, 2])
    y = tf.transpose(y, [0, 1, 3, 5, 2, 4])
    return tf.reshape(y, tf.concat([tf.shape(x)[:-3], [4 * c, height // 2, width // 2]], 0))''',
    "unsqueeze2x2": '''def _unsqueeze2x2(y):
    """The inverse of a 2x2 squeeze: (*batch, 4C, H/2, W/2) -> (*batch, C, H, W)."""
    c4, height, width = y.shape[-3:]
    x = tf.reshape(y, [-1, c4 // 4, 2, 2, height, width])
    x = tf.transpose(x, [0, 1, 4, 2, 5, 3])
    return tf.reshape(x, tf.concat([tf.shape(y)[:-3], [c4 // 4, 2 * height, 2 * width]], 0))''',
    "broadcast_batch": '''def _broadcast_batch(context, like, event_ndims):
    """``context`` (*b, C) broadcast to the batch shape of ``like``: (*batch, C)."""
    batch = tf.shape(like)[: tf.rank(like) - event_ndims]
    return tf.broadcast_to(context, tf.concat([batch, tf.shape(context)[-1:]], 0))''',
    "clamp_st": '''def _clamp_straight_through(x, low, high):
    """clamp(x, low, high) in value, exact at any magnitude; gradient 1 (straight through)."""
    return tf.stop_gradient(tf.clip_by_value(x, low, high)) + (x - tf.stop_gradient(x))''',
}

FIELD_HELPERS: dict[str, str] = {}

#: Helpers of a module with a layer whose output event shape differs from its input's.
SHAPE_HELPERS = '''def _moved_shape(shape, old, new):
    """A TensorShape whose trailing ``old`` event shape is replaced by ``new``."""
    if shape.rank is None:
        return tf.TensorShape(None)
    return shape[: shape.rank - len(old)].concatenate(new)


def _moved_shape_tensor(shape, old, new):
    """The same for a shape tensor."""
    return tf.concat([shape[: tf.size(shape) - len(old)], tf.constant(new, shape.dtype)], 0)'''

_SHAPE_METHODS = '''    def _forward_event_shape(self, input_shape):
        return _moved_shape(input_shape, self.event_shape, self.output_shape)

    def _forward_event_shape_tensor(self, input_shape):
        return _moved_shape_tensor(input_shape, self.event_shape, self.output_shape)

    def _inverse_event_shape(self, output_shape):
        return _moved_shape(output_shape, self.output_shape, self.event_shape)

    def _inverse_event_shape_tensor(self, output_shape):
        return _moved_shape_tensor(output_shape, self.output_shape, self.event_shape)'''

HELPERS = '''def _initial(weights, init, name, shape, dtype):
    """A weight's initial value: ``weights[name]`` when given (so the values hold in TF1
    graph mode too, where an assign made after the variable is never run), else uniform
    in +-init[name], or zeros where that bound is 0 (PARAM_INIT)."""
    if weights is not None and name in weights:
        return tf.cast(weights[name], dtype)
    if init[name] == 0.0:
        return tf.zeros(shape, dtype=dtype)
    return tf.random.uniform(shape, -init[name], init[name], dtype=dtype)


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
    """The flow: a tfb.Chain of the layers whose public calls refuse non-real inputs."""


class _Layer(_RealInputs, tfb.Bijector):
    """TFP plumbing shared by every layer: input checks, forward/inverse and both log-dets.

    Inputs are checked at the door (shape, dtype) and may have any batch rank, none
    included. A layer compares equal only to itself: TFP shares its caches between
    bijectors that compare equal, and two layers of one structure but other weights must
    never share results. TFP asks for a log-det separately from the transform it belongs
    to. Inside tf.function the log-det traced with the last forward (inverse) call is
    reused when TFP asks for it at that very tensor, so the conditioner is not traced
    twice; run eagerly, every call recomputes (a variable may have changed in between)."""

    def _get_parameterization(self):
        if "_fb_identity" not in self.__dict__:
            object.__setattr__(self, "_fb_identity", object())
        return self.__dict__["_fb_identity"]

    def forward_with_log_det(self, x):
        """(y, log|det dy/dx|) for x of shape (*batch, *event_shape)."""
        x = _checked(self, x, "x", self.event_shape)
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
        return self.inverse_with_log_det(y)[1]'''

CONDITIONAL_IMPORTS = IMPORTS
CONDITIONAL_USAGE = """Use: flow = build_flow(params, dtype=tf.float32); with a context c of shape
(*batch, {context_dim}) (broadcast to x's batch): flow.forward(x, conditional_input=c);
flow.inverse(y, conditional_input=c);
flow.forward_log_det_jacobian(x, event_ndims={event_ndims}, conditional_input=c);
in a TransformedDistribution, log_prob(x, bijector_kwargs={{"conditional_input": c}}) and
sample(n, bijector_kwargs=...). The flow is a tfb.Chain whose layers apply in PARAM_SHAPES
order and which gives conditional_input to every layer that reads it; every weight is a
tf.Variable in flow.trainable_variables."""

CONDITIONAL_HELPERS = '''def _checked_context(layer, context, x=None):
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
        )'''

EMBEDDING_HELPERS = '''class EmbeddedFlowChain(ConditionalFlowChain):
    """The conditional flow behind its context embedding: ``conditional_input=`` goes
    through ``self.embedding`` once per call and its features to every layer that reads
    a context. Inside tf.function the features traced for one context tensor are reused
    for the next call at that very tensor (as TransformedDistribution.log_prob asks for
    the inverse and then its log-det), so the layers' log-det memo still applies."""

    def __init__(self, bijectors, embedding, name=None):
        parameters = dict(locals())
        super().__init__(bijectors, parameters=parameters, name=name)
        self.embedding = embedding

    def _routed(self, kwargs):
        context = kwargs.get("conditional_input")
        if context is not None:
            last = self.__dict__.get("_fb_embedded")
            if last is not None and last[0] is context:
                kwargs["conditional_input"] = last[1]
            else:
                kwargs["conditional_input"] = features = self.embedding(context)
                traced = not tf.executing_eagerly()
                object.__setattr__(self, "_fb_embedded", (context, features) if traced else None)
        return super()._routed(kwargs)'''


def embedding_class(plan, body: list[str]) -> str:
    return "\n".join([
        "class ContextEmbedding(tf.Module):",
        f'    """{plan.doc}\n    """',
        "",
        signature("__init__", ["self", "*", "sizes", "init", "dtype=tf.float32", "weights=None",
                               'name="context_embedding"'], 1),  # fmt: skip
        "        super().__init__(name=name)",
        "        self.context_dim, self.dtype = sizes[0], dtype",
        "        with self.name_scope:",
        '            self.kernels, self.biases = _dense(sizes, init, dtype, weights, prefix="")',
        "",
        "    def __call__(self, context):",
        '        """The features (*batch, features) of a context (*batch, context_dim); one',
        '        context (context_dim,) or one of unknown rank is embedded as a batch of one."""',
        "        context = _checked_context(self, context)",
        "        rank = context.shape.rank",
        "        if rank is not None and rank > 1:",
        "            return self._embed(context)",
        "        features = self._embed(tf.reshape(context, [-1, self.context_dim]))",
        "        shape = tf.concat([tf.shape(context)[:-1], tf.shape(features)[-1:]], 0)",
        "        return tf.reshape(features, shape)",
        "",
        embed_methods(plan, body),
    ])  # fmt: skip


_FIELD_INIT = {
    "dense": "self.kernels, self.biases = _dense(sizes, init, dtype, weights)",
    "conv": "self.kernels, self.biases = _conv(sizes, kernel_size, init, dtype, weights)",
    "constant": "self.{name} = tf.constant({name}, dtype=dtype)",
    "vector": (
        'start = _initial(weights, init, "{name}", {shape}, dtype)\n'
        'self.{name} = tf.Variable(start, name="{name}")'
    ),
    "channel": (
        'start = _initial(weights, init, "{name}", {shape}[:1], dtype)\n'
        'self.{name} = tf.Variable(start, name="{name}")'
    ),
    "state": (
        'start = _initial(weights, init, "{name}", {shape}[:1], dtype)\n'
        'self.{name} = tf.Variable(start, name="{name}", trainable=False)'
    ),
    "index": "self.{name} = tf.constant({name}, dtype=tf.int32)",
    "int": "self.{name} = {name}",
}


def layer_class(
    name: str, plan: Plan, forward: list[str], inverse: list[str], training: list[str] | None = None
) -> str:
    init = [ln for f in plan.fields for ln in _FIELD_INIT[f.kind].format(name=f.name, shape=_shape_arg(plan)).split("\n")]
    const = plan.constant_jacobian
    base, ctx = ("_ConditionalLayer", ["context_dim"]) if plan.context else ("_Layer", [])
    moves = plan.output_shape != plan.event_shape
    out = ["output_shape"] * moves
    params = ["self", "*", *plan.args, "event_shape", *out, *ctx, "init", "dtype=tf.float32",
              "weights=None", "validate_args=False", "name=None"]  # fmt: skip
    shapes = ("    self.event_shape, self.output_shape = tuple(event_shape), tuple(output_shape)"
              if moves else "    self.event_shape = self.output_shape = tuple(event_shape)")
    return "\n".join([
        f"class {name}({base}):",
        f'    """{plan.doc}\n    """',
        "",
        signature("__init__", params, 1),
        block([
            "parameters = dict(locals())",
            f'with tf.name_scope(name or "{_snake(plan.class_name)}") as name:',
            shapes,
            *["    self.context_dim = context_dim"] * bool(plan.context),
            *["    self.training = True  # a training mode: batch statistics"] * (training is not None),
            *("    " + ln for ln in init),
            "    super().__init__(",
            f"        forward_min_event_ndims={len(plan.event_shape)},",
            f"        is_constant_jacobian={const},",
            "        validate_args=validate_args,",
            "        parameters=parameters,",
            "        dtype=dtype,",
            "        name=name,",
            "    )",
        ], 2),
        "",
        *([_SHAPE_METHODS, ""] if moves else []),
        traced_methods(forward, inverse, "Generated from flowbridge.layers.", bool(plan.context),
                       training),
        "",
        neutral_params_method(plan),
    ])  # fmt: skip


_LAYOUT_CHECK = '''
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            f"data_format: expected 'channels_last' or 'channels_first', got {data_format!r}"
        )'''

_LAYOUT_DOOR = '''
    bijectors = list(reversed(layers))
    if data_format == "channels_last":  # (*batch, H, W, C) in and out; the layers: (C, H, W)
        bijectors = [tfb.Transpose(perm=[1, 2, 0]), *bijectors, tfb.Transpose(perm=[2, 0, 1])]'''

_DOOR_SHAPES = '''
    shapes = (EVENT_SHAPE, {output})
    if data_format == "channels_last":
        shapes = tuple((h, w, c) for c, h, w in shapes)
    flow._fb_door = (shapes, data_format)  # the public calls check inputs against these'''

_LAYERS_OF = '''def layers_of(flow):
    """The layers of a flow made by build_flow, in application order."""
    return list(reversed(flow.bijectors))'''

_IMAGE_LAYERS_OF = '''def layers_of(flow):
    """The layers of a flow made by build_flow, in application order (without the
    layout's transposes)."""
    return [b for b in reversed(flow.bijectors) if not isinstance(b, tfb.Transpose)]'''


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def flow_code(spec, calls: list[tuple[str, dict]], embedding=None) -> str:
    layers = "\n".join(
        "        " + call(name, args, {"init": f"init[{i}]", "dtype": "dtype",
                                   "weights": f"weights[{i}]", "name": f'"layer_{i}"'}, 8) + ","  # fmt: skip
        for i, (name, args) in enumerate(calls)
    )
    chain = "ConditionalFlowChain" if spec.context_dim else "FlowChain"
    make, own = f'{chain}(list(reversed(layers)), name="flow")', ""
    if embedding is not None:
        make = 'EmbeddedFlowChain(list(reversed(layers)), embedding, name="flow")'
        own = "\n    " + call("embedding = ContextEmbedding", embedding.args, {
            "init": '_under(PARAM_INIT, "context_embedding.")', "dtype": "dtype",
            "weights": '_under(params if params is not None else {}, "context_embedding.")',
        }, 4)  # fmt: skip
    image = len(spec.event_shape) == 3
    signature, layout, door = "params=None, dtype=tf.float32", "", ""
    if image:
        signature += ', data_format="channels_last"'
        layout = _LAYOUT_CHECK
        make = make.replace("list(reversed(layers))", "bijectors")
        own += _LAYOUT_DOOR
        output = "OUTPUT_SHAPE" if changes_shape(spec, calls) else "EVENT_SHAPE"
        door = _DOOR_SHAPES.format(output=output)
    return f'''def build_flow({signature}):
    """The flow as a tfb.Chain (layers applied first to last); ``params`` (optional)
    maps the neutral names of PARAM_SHAPES to arrays, else weights start by PARAM_INIT.
    The weights are the variables' initial values, so they hold in TF1 graph mode too."""{layout}
    init = _per_layer(PARAM_INIT, {len(calls)})
    weights = _per_layer(params if params is not None else {{}}, {len(calls)})
    # Long index lists stay compact:
    # fmt: off
    layers = [
{layers}
    ]
    # fmt: on{own}
    flow = {make}{door}
    if params is not None:
        load_neutral_params(flow, params)
    return flow


{_IMAGE_LAYERS_OF if image else _LAYERS_OF}


{neutral_params_function("layers_of(flow)", embedding is not None, "tf.Variable", "")}


def load_neutral_params(flow, params):
    """Assign ``params`` (neutral names -> arrays) to ``flow``, checking names and shapes."""
    own = neutral_params(flow)
    missing, extra = sorted(own.keys() - params.keys()), sorted(params.keys() - own.keys())
    if missing or extra:
        raise KeyError(f"params do not fit the flow: missing {{missing}}, unexpected {{extra}}")
    for name, target in own.items():
        value = tf.cast(params[name], target.dtype)
        if tuple(value.shape) != tuple(target.shape):
            got, want = tuple(value.shape), tuple(target.shape)
            raise ValueError(f"{{name}}: expected shape {{want}}, got {{got}}")
        target.assign(value)
    return flow'''


def _shape_arg(plan: Plan) -> str:
    """The constructor argument that gives a "vector" field its shape."""
    return "active_shape" if "active_shape" in plan.args else "event_shape"
