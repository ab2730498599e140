"""NumPy emitter: IR ops as NumPy calls, layers as plain float64 classes (the reference)."""

from __future__ import annotations

from ...codegen import (
    CONTEXT_METHODS,
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

TITLE = "NumPy float64 reference"
USAGE = """Use: flow = build_flow(params); flow.forward(x); flow.inverse(y);
flow.forward_log_det_jacobian(x); flow.inverse_log_det_jacobian(y).
Every input is converted to float64; the flow has no state besides its weights."""

IMPORTS = "import numpy as np"
IMAGE_SHAPES = "Shapes: images are (*batch, C, H, W), channels first; log-dets are (*batch,)."

#: IR op -> NumPy expression; ``{0}``, ``{1}`` are arguments, ``{name}`` attributes.
OPS = {
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "neg": "-{0}",
    "exp": "np.exp({0})",
    "log": "np.log({0})",
    "tanh": "np.tanh({0})",
    "sigmoid": "np.exp(-np.logaddexp(0.0, -{0}))",
    "log_sigmoid": "-np.logaddexp(0.0, -{0})",
    "clamp_st": "np.clip({0}, {low}, {high})",  # no gradients here: the value alone
    "relu": "np.maximum({0}, 0.0)",
    "leaky_relu": "np.where({0} > 0, {0}, {negative_slope} * {0})",
    "elu": "np.where({0} > 0, {0}, np.expm1(np.minimum({0}, 0.0)))",
    "erf": "_erf({0})",
    "linear": "np.matmul({0}, {1}) + {2}",
    "conv2d": "_conv2d({0}, {1}, {2})",
    "per_channel": "{0}[:, None, None]",
    "batch_mean": "_batch_mean({0}, {event_ndims})",
    "assign": "{0}[...] = {1}",
    "squeeze2x2": "_squeeze2x2({0})",
    "unsqueeze2x2": "_unsqueeze2x2({0})",
    "slice": "{0}[{index}]",
    "take": "np.take({0}, {1}, axis={axis})",
    "concat": "np.concatenate([{0}, {1}], axis={axis})",
    "broadcast_batch": "np.broadcast_to({0}, {1}.shape[:-{event_ndims}] + {0}.shape[-1:])",
    "sum_event": "np.sum({0}, axis={axes})",
    "sum_all": "np.sum({0})",
    "batch_fill": "np.full({1}.shape[:-{event_ndims}], {0})",
    "batch_zeros": "np.zeros({0}.shape[:-{event_ndims}])",
}
OP_IMPORTS = {"erf": "import math"}
OP_HELPERS = {
    "batch_mean": '''def _batch_mean(x, event_ndims):
    """The mean per channel of an image (C, H, W) or per entry of a vector, over every
    batch dimension (and H, W): (C,)."""
    flat = x.reshape((-1,) + x.shape[x.ndim - event_ndims :])
    return flat.mean(axis=(0, 2, 3) if event_ndims == 3 else 0)''',
    "erf": '''_erf = np.vectorize(math.erf, otypes=[np.float64])  # correctly rounded, float64''',
    "conv2d": '''def _conv(sizes, kernel_size, init, rng):
    """Convolutions sizes[0] -> ... -> sizes[-1] channels, kernels (k, k, in, out), each
    weight started by its bound in ``init`` (the layer's entries of PARAM_INIT)."""
    kernels, biases = [], []
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        shape = (kernel_size, kernel_size, n_in, n_out)
        kernels.append(_initial(init[f"conditioner.{j}.kernel"], shape, rng))
        biases.append(_initial(init[f"conditioner.{j}.bias"], (n_out,), rng))
    return kernels, biases


def _conv2d(x, kernel, bias):
    """Stride-1 "same" cross-correlation: x (*batch, C_in, H, W), kernel (k, k, C_in,
    C_out), bias (C_out,) -> (*batch, C_out, H, W), summed tap by tap in float64."""
    k, height, width = kernel.shape[0], x.shape[-2], x.shape[-1]
    pad = [(0, 0)] * (x.ndim - 2) + [(k // 2, k // 2)] * 2
    padded = np.pad(x, pad)
    out = np.zeros(x.shape[:-3] + (kernel.shape[3], height, width))
    for i in range(k):
        for j in range(k):
            window = padded[..., i : i + height, j : j + width]
            out += np.einsum("...chw,co->...ohw", window, kernel[i, j])
    return out + bias[:, None, None]''',
    "squeeze2x2": '''def _squeeze2x2(x):
    """(*batch, C, H, W) -> (*batch, 4C, H/2, W/2): y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]."""
    c, height, width = x.shape[-3:]
    y = x.reshape(-1, c, height // 2, 2, width // 2, 2).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(x.shape[:-3] + (4 * c, height // 2, width // 2))''',
    "unsqueeze2x2": '''def _unsqueeze2x2(y):
    """The inverse of a 2x2 squeeze: (*batch, 4C, H/2, W/2) -> (*batch, C, H, W)."""
    c4, height, width = y.shape[-3:]
    x = y.reshape(-1, c4 // 4, 2, 2, height, width).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(y.shape[:-3] + (c4 // 4, 2 * height, 2 * width))''',
}
FIELD_HELPERS: dict[str, str] = {}

HELPERS = '''def _initial(bound, shape, rng):
    """An array uniform in +-bound, or zeros where the bound is 0 (PARAM_INIT)."""
    if bound == 0.0:
        return np.zeros(shape)
    return rng.uniform(-bound, bound, size=shape)


def _dense(sizes, init, rng, prefix="conditioner."):
    """Dense layers sizes[0] -> ... -> sizes[-1], kernels (in, out), each weight started
    by its bound in ``init`` (the layer's entries of PARAM_INIT, named {prefix}{j}.*)."""
    kernels, biases = [], []
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        kernels.append(_initial(init[f"{prefix}{j}.kernel"], (n_in, n_out), rng))
        biases.append(_initial(init[f"{prefix}{j}.bias"], (n_out,), rng))
    return kernels, biases


def _float64(x):
    return np.asarray(x, dtype=np.float64)


def _checked(layer, value, name, event):
    """``value`` as float64 if it holds real numbers of shape (*batch, *event); else a
    TypeError or ValueError naming the expected shape (complex values are refused, never
    cast)."""
    where = f"{type(layer).__name__}: {name}"
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{where}: expected real numbers, got dtype {array.dtype}")
    if array.ndim < len(event) or array.shape[array.ndim - len(event) :] != event:
        want = ", ".join(["*batch", *map(str, event)])
        raise ValueError(f"{where}: expected shape ({want}), got {array.shape}")
    return array.astype(np.float64, copy=False)


class _Layer:
    """The reference API shared by every layer: checked inputs, float64 throughout."""

    def __init__(self, event_shape, output_shape=None):
        self.event_shape = tuple(event_shape)
        self.output_shape = tuple(output_shape or event_shape)

    def forward_with_log_det(self, x):
        """(y, log|det dy/dx|) for x of shape (*batch, *event_shape)."""
        return self._forward_with_log_det(_checked(self, x, "x", self.event_shape))

    def inverse_with_log_det(self, y):
        """(x, log|det dx/dy|) for y of shape (*batch, *output_shape)."""
        return self._inverse_with_log_det(_checked(self, y, "y", self.output_shape))

    def forward(self, x):
        return self.forward_with_log_det(x)[0]

    def inverse(self, y):
        return self.inverse_with_log_det(y)[0]

    def forward_log_det_jacobian(self, x):
        return self.forward_with_log_det(x)[1]

    def inverse_log_det_jacobian(self, y):
        return self.inverse_with_log_det(y)[1]'''

CONDITIONAL_IMPORTS = IMPORTS
CONDITIONAL_USAGE = """Use: flow = build_flow(params); with a context c of shape (*batch, {context_dim})
(broadcast to x's batch): flow.forward(x, c); flow.inverse(y, c);
flow.forward_log_det_jacobian(x, c); flow.inverse_log_det_jacobian(y, c).
Every input is converted to float64; the flow has no state besides its weights."""

CONDITIONAL_HELPERS = '''def _checked_context(layer, context, x=None):
    """``context`` as float64 if it holds real numbers of shape (*batch, context_dim) whose
    batch broadcasts to x's (when x is given: a context embedding's input has none yet);
    else a TypeError or ValueError naming both sizes."""
    where = f"{type(layer).__name__}: context"
    array = np.asarray(context)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{where}: expected real numbers, got dtype {array.dtype}")
    if array.ndim < 1 or array.shape[-1] != layer.context_dim:
        raise ValueError(
            f"{where}: expected shape (*batch, {layer.context_dim}) (the flow's context_dim), "
            f"got {array.shape}"
        )
    if x is None:
        return array.astype(np.float64, copy=False)
    batch = x.shape[: x.ndim - len(layer.event_shape)]
    try:
        fits = np.broadcast_shapes(array.shape[:-1], batch) == batch
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{where}: its batch shape {array.shape[:-1]} does not broadcast to x's {batch}"
        )
    return array.astype(np.float64, copy=False)


class _ConditionalLayer(_Layer):
    """A layer that reads the context: every call takes it after the input."""

    def __init__(self, event_shape, context_dim):
        super().__init__(event_shape)
        self.context_dim = context_dim

''' + CONTEXT_METHODS + '''

    def forward(self, x, context):
        return self.forward_with_log_det(x, context)[0]

    def inverse(self, y, context):
        return self.inverse_with_log_det(y, context)[0]

    def forward_log_det_jacobian(self, x, context):
        return self.forward_with_log_det(x, context)[1]

    def inverse_log_det_jacobian(self, y, context):
        return self.inverse_with_log_det(y, context)[1]'''

EMBEDDING_HELPERS = ""  # the context embedding checks its input with _checked_context

_FIELD_INIT = {
    "dense": "self.kernels, self.biases = _dense(sizes, init, rng)",
    "conv": "self.kernels, self.biases = _conv(sizes, kernel_size, init, rng)",
    "constant": "self.{name} = np.asarray({name}, dtype=np.float64)",
    "vector": 'self.{name} = _initial(init["{name}"], {shape}, rng)',
    "channel": 'self.{name} = _initial(init["{name}"], {shape}[:1], rng)',
    "state": 'self.{name} = _initial(init["{name}"], {shape}[:1], rng)',
    "index": "self.{name} = np.asarray({name}, dtype=np.intp)",
    "int": "self.{name} = {name}",
}


def layer_class(
    name: str, plan: Plan, forward: list[str], inverse: list[str], training: list[str] | None = None
) -> str:
    init = [_FIELD_INIT[f.kind].format(name=f.name, shape=_shape_arg(plan)) for f in plan.fields]
    uses_rng = any(f.kind in ("dense", "conv", "vector", "channel", "state") for f in plan.fields)
    init += ["self.training = True  # a training mode: batch statistics"] * (training is not None)
    base, ctx = ("_ConditionalLayer", ["context_dim"]) if plan.context else ("_Layer", [])
    out = ["output_shape"] if plan.output_shape != plan.event_shape else []
    return "\n".join([
        f"class {name}({base}):",
        f'    """{plan.doc}\n    """',
        "",
        signature("__init__", ["self", "*", *plan.args, "event_shape", *out, *ctx, "init",
                               "rng=None"], 1),  # fmt: skip
        block([f"super().__init__({', '.join(['event_shape', *out, *ctx])})"]
              + ["rng = rng if rng is not None else np.random.default_rng(0)"] * uses_rng
              + init, 2),  # fmt: skip
        "",
        traced_methods(forward, inverse, "Generated from flowbridge.layers.", bool(plan.context),
                       training),
        "",
        neutral_params_method(plan),
    ])  # fmt: skip


def embedding_class(plan, body: list[str]) -> str:
    return "\n".join([
        "class ContextEmbedding:",
        f'    """{plan.doc}\n    """',
        "",
        "    def __init__(self, *, sizes, init, rng=None):",
        "        rng = rng if rng is not None else np.random.default_rng(0)",
        "        self.context_dim = sizes[0]",
        '        self.kernels, self.biases = _dense(sizes, init, rng, prefix="")',
        "",
        "    def __call__(self, context):",
        '        """The features (*batch, features) of a context (*batch, context_dim)."""',
        "        return self._embed(_checked_context(self, context))",
        "",
        embed_methods(plan, body),
    ])  # fmt: skip


_EMBEDDED_FLOW = '''class EmbeddedFlow(Flow):
    """The flow behind its context embedding: each call embeds the context once
    (``self.embedding``) and the layers read the features."""

    def __init__(self, layers, embedding):
        super().__init__(layers)
        self.embedding = embedding

    def _forward_with_log_det(self, x, context):
        return super()._forward_with_log_det(x, self.embedding(context))

    def _inverse_with_log_det(self, y, context):
        return super()._inverse_with_log_det(y, self.embedding(context))'''

_FLOW = '''class Flow(_Layer):
    """The layers applied first to last; log-dets add up."""

    def __init__(self, layers):
        super().__init__({shapes})
        self.layers = list(layers)

    def _forward_with_log_det(self, x):
        total = np.zeros(x.shape[:-{n}])
        for layer in self.layers:
            x, log_det = layer.forward_with_log_det(x)
            total = total + log_det
        return x, total

    def _inverse_with_log_det(self, y):
        total = np.zeros(y.shape[:-{n}])
        for layer in reversed(self.layers):
            y, log_det = layer.inverse_with_log_det(y)
            total = total + log_det
        return y, total'''

_CONDITIONAL_FLOW = '''class Flow(_ConditionalLayer):
    """The layers applied first to last, each that reads the context given it; log-dets
    add up."""

    def __init__(self, layers):
        super().__init__(EVENT_SHAPE, CONTEXT_DIM)
        self.layers = list(layers)

    def _forward_with_log_det(self, x, context):
        total = np.zeros(x.shape[:-{n}])
        for layer in self.layers:
            given = (context,) if isinstance(layer, _ConditionalLayer) else ()
            x, log_det = layer.forward_with_log_det(x, *given)
            total = total + log_det
        return x, total

    def _inverse_with_log_det(self, y, context):
        total = np.zeros(y.shape[:-{n}])
        for layer in reversed(self.layers):
            given = (context,) if isinstance(layer, _ConditionalLayer) else ()
            y, log_det = layer.inverse_with_log_det(y, *given)
            total = total + log_det
        return y, total'''


def flow_code(spec, calls: list[tuple[str, dict]], embedding=None) -> str:
    layers = "\n".join(
        "        " + call(name, args, {"init": f"init[{i}]", "rng": "rng"}, 8) + ","
        for i, (name, args) in enumerate(calls)
    )
    n = len(spec.event_shape)  # the event rank, the same at both ends of the flow
    flow_class = _CONDITIONAL_FLOW if spec.context_dim else _FLOW
    make, own = "Flow(layers)", ""
    if embedding is not None:
        flow_class += "\n\n\n" + _EMBEDDED_FLOW
        make = "EmbeddedFlow(layers, embedding)"
        own = "\n    " + call(
            "embedding = ContextEmbedding", embedding.args,
            {"init": '_under(PARAM_INIT, "context_embedding.")', "rng": "rng"}, 4)  # fmt: skip
    shapes = "EVENT_SHAPE, OUTPUT_SHAPE" if changes_shape(spec, calls) else "EVENT_SHAPE"
    return flow_class.format(n=n, shapes=shapes) + f'''


def build_flow(params=None, seed=0):
    """The flow; ``params`` (optional) maps the neutral names of PARAM_SHAPES to
    arrays, else weights start by PARAM_INIT (drawn with ``seed``)."""
    rng = np.random.default_rng(seed)
    init = _per_layer(PARAM_INIT, {len(calls)})
    # Long index lists stay compact:
    # fmt: off
    layers = [
{layers}
    ]
    # fmt: on{own}
    flow = {make}
    if params is not None:
        load_neutral_params(flow, params)
    return flow


{neutral_params_function("flow.layers", embedding is not None, "array", " (the live arrays)")}


def load_neutral_params(flow, params):
    """Copy ``params`` (neutral names -> arrays) into ``flow`` as float64, checking names
    and shapes."""
    own = neutral_params(flow)
    missing, extra = sorted(own.keys() - params.keys()), sorted(params.keys() - own.keys())
    if missing or extra:
        raise KeyError(f"params do not fit the flow: missing {{missing}}, unexpected {{extra}}")
    for name, target in own.items():
        value = _float64(params[name])
        if value.shape != target.shape:
            raise ValueError(f"{{name}}: expected shape {{target.shape}}, got {{value.shape}}")
        target[...] = value
    return flow'''


def _shape_arg(plan: Plan) -> str:
    """The constructor argument that gives a "vector" field its shape."""
    return "active_shape" if "active_shape" in plan.args else "event_shape"
