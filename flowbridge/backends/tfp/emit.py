"""TFP emitter: IR ops as TensorFlow calls, layers as ``tfb.Bijector`` subclasses."""

from __future__ import annotations

from pathlib import Path

from ...layers import Plan
from ...source import (
    block,
    call,
    changes_shape,
    embed_methods,
    neutral_params_method,
    signature,
    traced_methods,
)
from ..contract import Emitter

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
    "matrix": (
        'start = _identity(weights, init, "{name}", {shape}, dtype)\n'
        'self.{name} = tf.Variable(start, name="{name}")'
    ),
    "index": "self.{name} = tf.constant({name}, dtype=tf.int32)",
    "int": "self.{name} = {name}",
}


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class TfpEmitter(Emitter):
    """TFP: ``tfb.Bijector`` layers in a ``tfb.Chain`` (``FlowChain``); a conditional
    flow routes ``conditional_input`` to the layers that read it."""

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
    CONDITIONAL_IMPORTS = IMPORTS
    CONDITIONAL_USAGE = """Use: flow = build_flow(params, dtype=tf.float32); with a context c of shape
(*batch, {context_dim}) (broadcast to x's batch): flow.forward(x, conditional_input=c);
flow.inverse(y, conditional_input=c);
flow.forward_log_det_jacobian(x, event_ndims={event_ndims}, conditional_input=c);
in a TransformedDistribution, log_prob(x, bijector_kwargs={{"conditional_input": c}}) and
sample(n, bijector_kwargs=...). The flow is a tfb.Chain whose layers apply in PARAM_SHAPES
order and which gives conditional_input to every layer that reads it; every weight is a
tf.Variable in flow.trainable_variables."""

    #: IR op -> TensorFlow expression; ``{0}``, ``{1}`` are arguments, ``{name}`` attributes.
    #: ``batch_fill``/``batch_zeros`` return scalars: they occur only where the log-det is
    #: the same for every example of a call (constant-Jacobian layers, whose log-det TFP
    #: caches once, and a batch norm), and TFP broadcasts a scalar over any batch.
    FIELD_INIT = _FIELD_INIT
    OPS = {
        **Emitter.OPS,
        "exp": "tf.exp({0})",
        "log": "tf.math.log({0})",
        "sqrt": "tf.sqrt({0})",
        "abs": "tf.abs({0})",
        "softplus": "tf.math.softplus({0})",
        "clamp": "tf.clip_by_value({0}, {low}, {high})",
        "where": "tf.where({0}, {1}, {2})",
        "softmax": "tf.nn.softmax({0}, axis=-1)",
        "cumsum": "tf.math.cumsum({0}, axis=-1)",
        "pad": "_pad_last({0}, {before}, {after}, {value})",
        "bucket": "_bucket({0}, {1}, {last})",
        "gather": "_gather({0}, {1})",
        "reshape": "_reshape({0}, {ndims}, {shape})",
        "transpose": "_transpose_last({0}, {perm})",
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
        "assign": "{0}.assign({1})",
        "take": "tf.gather({0}, {1}, axis={axis})",
        "matvec": 'tf.einsum("{subscripts}", {0}, {1})',
        "solve_triangular": "tf.linalg.triangular_solve({0}, {1}, lower={lower})",
        "concat": "tf.concat([{0}, {1}], axis={axis})",
        "broadcast_batch": "_broadcast_batch({0}, {1}, {event_ndims})",
        "sum_event": "tf.reduce_sum({0}, axis={axes})",
        "sum_all": "tf.reduce_sum({0})",
        "batch_fill": "tf.identity({0})",
        "batch_zeros": "tf.zeros([], dtype={0}.dtype)",
    }

    CONSTANT = "self.{name} = {value}"
    PRELUDE = Path(__file__).with_name("prelude.py")
    BASE = ("_initial", "_dense", "_Memo", "_checked", "_batched", "_refuse_non_real",
            "_RealInputs", "FlowChain", "_in_domain", "_Layer", "layers_of", "neutral_params",
            "load_neutral_params")  # fmt: skip
    CONDITIONAL = ("_checked_context", "_same", "_ConditionalLayer", "ConditionalFlowChain")
    EMBEDDING = ("EmbeddedFlowChain",)
    SHAPES = ("_moved_shape", "_moved_shape_tensor", "_MovesShape")
    IMAGE = ("_checked_layout", "_in_layout", "_with_door")
    FIELD_HELPERS = {"matrix": ("_identity",)}
    # tf.nn.conv2d runs channels last on the CPU: a conditioner of convolutions computes
    # channels last inside, transposed once at each end (not at every convolution)
    CONV_LAYOUT = {
        ("first", "first"): "_conv2d({0}, {1}, {2})",
        ("first", "last"): "_conv2d_last(_channels_last({0}), {1}, {2})",
        ("last", "last"): "_conv2d_last({0}, {1}, {2})",
        ("last", "first"): "_channels_first(_conv2d_last({0}, {1}, {2}))",
    }
    OP_HELPERS = {
        "loop": ("_repeat",),
        "transpose": ("_transpose_last",),
        "batch_mean": ("_batch_mean",),
        "broadcast_batch": ("_broadcast_batch",),
        "bucket": ("_bucket",),
        "clamp_st": ("_clamp_straight_through",),
        "conv2d": ("_conv", "_channels_last", "_channels_first", "_conv2d_last", "_conv2d"),
        "gather": ("_gather",),
        "pad": ("_pad_last",),
        "reshape": ("_reshape",),
        "squeeze2x2": ("_squeeze2x2",),
        "unsqueeze2x2": ("_unsqueeze2x2",),
    }

    def layer_class(
        self,
        name: str,
        plan: Plan,
        forward: list[str],
        inverse: list[str],
        training: list[str] | None = None,
        methods: tuple[str, ...] = (),
        constants: tuple[str, ...] = (),
    ) -> str:
        init = [
            ln
            for f in plan.fields
            for ln in self.field_init(f.kind)
            .format(name=f.name, shape=self.field_shape(plan, f))
            .split("\n")
        ]
        const = plan.constant_jacobian
        base, ctx = ("_ConditionalLayer", ["context_dim"]) if plan.context else ("_Layer", [])
        moves = plan.output_shape != plan.event_shape
        out = ["output_shape"] * moves
        params = ["self", "*", *plan.args, "event_shape", *out, *ctx, "init", "dtype=tf.float32",
                  "weights=None", "validate_args=False", "name=None"]  # fmt: skip
        shapes = (
            "    self.event_shape, self.output_shape = tuple(event_shape), tuple(output_shape)"
            if moves
            else "    self.event_shape = self.output_shape = tuple(event_shape)"
        )
        bases = f"_MovesShape, {base}" if moves else base
        return "\n".join([
            f"class {name}({bases}):",
            f'    """{plan.doc}\n    """',
            "",
            *self.domain_lines(plan),
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
            *([block(list(constants), 2)] if constants else []),
            "",
            traced_methods(forward, inverse, "Generated from flowbridge.layers.", bool(plan.context),
                           training, methods),
            "",
            neutral_params_method(plan),
        ])  # fmt: skip

    def embedding_class(self, plan, body: list[str]) -> str:
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

    def flow_code(self, spec, calls: list[tuple[str, dict]], embedding=None) -> str:
        layers = "\n".join(
            "        "
            + call(
                name,
                args,
                {
                    "init": f"init[{i}]",
                    "dtype": "dtype",
                    "weights": f"weights[{i}]",
                    "validate_args": "validate_args",
                    "name": f'"layer_{i}"',
                },
                8,
            )
            + ","  # fmt: skip
            for i, (name, args) in enumerate(calls)
        )
        chain = "ConditionalFlowChain" if spec.context_dim else "FlowChain"
        make = f'{chain}(list(reversed(layers)), validate_args=validate_args, name="flow")'
        own = ""
        if embedding is not None:
            make = ('EmbeddedFlowChain(\n        list(reversed(layers)), embedding, '
                    'validate_args=validate_args, name="flow"\n    )')  # as ruff wraps it
            own = "\n    " + call("embedding = ContextEmbedding", embedding.args, {
                "init": '_under(PARAM_INIT, "context_embedding.")', "dtype": "dtype",
                "weights": '_under(params if params is not None else {}, "context_embedding.")',
            }, 4)  # fmt: skip
        image = len(spec.event_shape) == 3
        signature, layout, door = "params=None, dtype=tf.float32, validate_args=False", "", ""
        if image:
            signature += ', data_format="channels_last"'
            layout = "\n    data_format = _checked_layout(data_format)"
            make = make.replace("list(reversed(layers))", "_in_layout(layers, data_format)")
            output = "OUTPUT_SHAPE" if changes_shape(spec, calls) else "EVENT_SHAPE"
            door = f"\n    flow = _with_door(flow, (EVENT_SHAPE, {output}), data_format)"
        return f'''def build_flow({signature}):
    """The flow as a tfb.Chain (layers applied first to last); ``params`` (optional)
    maps the neutral names of PARAM_SHAPES to arrays, else weights start by PARAM_INIT.
    The weights are the variables' initial values, so they hold in TF1 graph mode too.
    ``validate_args`` (TFP's, given to every layer and the chain): check that inputs lie
    in the layers' domains."""{layout}
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
    return flow'''
