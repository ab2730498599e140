"""TFP emitter: IR ops as TensorFlow calls, layers as ``tfb.Bijector`` subclasses."""

from __future__ import annotations

from ...codegen import block, call, neutral_params_method, signature, traced_methods
from ...layers import Plan

TITLE = "TensorFlow Probability bijectors"
USAGE = """Use: flow = build_flow(params, dtype=tf.float32); flow.forward(x); flow.inverse(y);
flow.forward_log_det_jacobian(x, event_ndims=1). The flow is a tfb.Chain whose layers
apply in PARAM_SHAPES order (the Chain lists them reversed); every weight is a
tf.Variable in flow.trainable_variables. Layers with a constant Jacobian return a
scalar log-det, which TFP broadcasts over the batch."""

IMPORTS = """import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors"""

#: IR op -> TensorFlow expression; ``{0}``, ``{1}`` are arguments, ``{name}`` attributes.
#: ``batch_fill``/``batch_zeros`` return scalars: they occur only in constant-Jacobian
#: layers, whose log-det TFP caches once and broadcasts over any batch.
OPS = {
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "neg": "-{0}",
    "exp": "tf.exp({0})",
    "tanh": "tf.tanh({0})",
    "sigmoid": "tf.sigmoid({0})",
    "log_sigmoid": "tf.math.log_sigmoid({0})",
    "clamp_st": "{0} + tf.stop_gradient(tf.clip_by_value({0}, {low}, {high}) - {0})",
    "relu": "tf.nn.relu({0})",
    # tf.nn.leaky_relu keeps alpha as a float32 attribute (2e-10 off in float64)
    "leaky_relu": "tf.where({0} > 0, {0}, {negative_slope} * {0})",
    "elu": "tf.nn.elu({0})",
    "erf": "tf.math.erf({0})",
    "linear": "tf.linalg.matmul({0}, {1}) + {2}",
    "slice_last": "{0}[..., {slice}]",
    "take_last": "tf.gather({0}, {1}, axis=-1)",
    "concat_last": "tf.concat([{0}, {1}], axis=-1)",
    "sum_last": "tf.reduce_sum({0}, axis=-1)",
    "sum_all": "tf.reduce_sum({0})",
    "batch_fill": "tf.identity({0})",
    "batch_zeros": "tf.zeros([], dtype={0}.dtype)",
}
OP_IMPORTS: dict[str, str] = {}
OP_HELPERS: dict[str, str] = {}

HELPERS = '''def _dense(sizes, dtype):
    """Dense layers sizes[0] -> ... -> sizes[-1]: kernels (in, out) uniform in
    +-1/sqrt(in), zero biases, and a zero last layer so the layer starts as the identity."""
    kernels, biases = [], []
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        bound = 0.0 if j == len(sizes) - 2 else n_in**-0.5
        init = tf.random.uniform([n_in, n_out], -bound, bound, dtype=dtype)
        kernels.append(tf.Variable(init, name=f"kernel_{j}"))
        biases.append(tf.Variable(tf.zeros([n_out], dtype=dtype), name=f"bias_{j}"))
    return kernels, biases


class _Memo:
    """The last (input, log-det) pair of one direction; not tracked by tf.Module."""

    __slots__ = ("forward", "inverse")

    def __init__(self):
        self.forward = self.inverse = None


class _Layer(tfb.Bijector):
    """TFP plumbing shared by every layer: forward/inverse and both log-dets.

    TFP asks for a log-det separately from the transform it belongs to. Inside
    tf.function the log-det traced with the last forward (inverse) call is reused when TFP
    asks for it at that very tensor, so the conditioner is not traced twice; run eagerly,
    every call recomputes (a variable may have changed in between)."""

    def _memo(self):
        if "_fb_memo" not in self.__dict__:
            object.__setattr__(self, "_fb_memo", _Memo())
        return self.__dict__["_fb_memo"]

    def _forward(self, x):
        y, log_det = self.forward_with_log_det(x)
        self._memo().forward = None if tf.executing_eagerly() else (x, y, log_det)
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

_FIELD_INIT = {
    "mlp": "self.kernels, self.biases = _dense(sizes, dtype)",
    "vector": 'self.{name} = tf.Variable(tf.zeros([dim], dtype=dtype), name="{name}")',
    "index": "self.{name} = tf.constant({name}, dtype=tf.int32)",
    "int": "self.{name} = {name}",
}


def layer_class(name: str, plan: Plan, forward: list[str], inverse: list[str]) -> str:
    init = [_FIELD_INIT[f.kind].format(name=f.name) for f in plan.fields]
    const = plan.constant_jacobian
    params = ["self", "*", *plan.args, "dtype=tf.float32", "validate_args=False", "name=None"]
    return "\n".join([
        f"class {name}(_Layer):",
        f'    """{plan.doc}\n    """',
        "",
        signature("__init__", params, 1),
        block([
            "parameters = dict(locals())",
            f'with tf.name_scope(name or "{_snake(plan.class_name)}") as name:',
            *("    " + ln for ln in init),
            "    super().__init__(",
            "        forward_min_event_ndims=1,",
            f"        is_constant_jacobian={const},",
            "        validate_args=validate_args,",
            "        parameters=parameters,",
            "        dtype=dtype,",
            "        name=name,",
            "    )",
        ], 2),
        "",
        traced_methods(forward, inverse, "Generated from flowbridge.layers."),
        "",
        neutral_params_method(plan),
    ])  # fmt: skip


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def flow_code(spec, calls: list[tuple[str, dict]]) -> str:
    layers = "\n".join(
        "        " + call(name, args, {"dtype": "dtype", "name": f'"layer_{i}"'}, 8) + ","
        for i, (name, args) in enumerate(calls)
    )
    return f'''def build_flow(params=None, dtype=tf.float32):
    """The flow as a tfb.Chain (layers applied first to last); ``params`` (optional)
    maps the neutral names of PARAM_SHAPES to arrays, else weights start at the identity."""
    # Long index lists stay compact:
    # fmt: off
    layers = [
{layers}
    ]
    # fmt: on
    flow = tfb.Chain(list(reversed(layers)), name="flow")
    if params is not None:
        load_neutral_params(flow, params)
    return flow


def layers_of(flow):
    """The layers of a flow made by build_flow, in application order."""
    return list(reversed(flow.bijectors))


def neutral_params(flow):
    """{{neutral name: tf.Variable}} of a flow made by build_flow."""
    return {{
        f"layers.{{i}}.{{name}}": value
        for i, layer in enumerate(layers_of(flow))
        for name, value in layer.neutral_params().items()
    }}


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
