"""NumPy emitter: IR ops as NumPy calls, layers as plain float64 classes (the reference)."""

from __future__ import annotations

from pathlib import Path

from ...layers import WEIGHT_KINDS
from ...source import block, call, embed_methods, neutral_params_method, signature, traced_methods
from ..contract import Emitter

_FIELD_INIT = {
    "dense": "self.kernels, self.biases = _dense(sizes, init, rng)",
    "conv": "self.kernels, self.biases = _conv(sizes, kernel_size, init, rng)",
    "constant": "self.{name} = np.asarray({name}, dtype=np.float64)",
    "vector": 'self.{name} = _initial(init["{name}"], {shape}, rng)',
    "channel": 'self.{name} = _initial(init["{name}"], {shape}[:1], rng)',
    "state": 'self.{name} = _initial(init["{name}"], {shape}[:1], rng)',
    "matrix": 'self.{name} = _identity(init["{name}"], {shape}, rng)',
    "index": "self.{name} = np.asarray({name}, dtype=np.intp)",
    "int": "self.{name} = {name}",
}


class NumpyEmitter(Emitter):
    """The float64 NumPy reference: plain classes, no framework, no state but weights."""

    TITLE = "NumPy float64 reference"
    USAGE = """Use: flow = build_flow(params); flow.forward(x); flow.inverse(y);
flow.forward_log_det_jacobian(x); flow.inverse_log_det_jacobian(y).
Every input is converted to float64; the flow has no state besides its weights."""
    CONDITIONAL_USAGE = """Use: flow = build_flow(params); with a context c of shape (*batch, {context_dim})
(broadcast to x's batch): flow.forward(x, c); flow.inverse(y, c);
flow.forward_log_det_jacobian(x, c); flow.inverse_log_det_jacobian(y, c).
Every input is converted to float64; the flow has no state besides its weights."""
    IMAGE_SHAPES = "Shapes: images are (*batch, C, H, W), channels first; log-dets are (*batch,)."
    IMPORTS = CONDITIONAL_IMPORTS = "import numpy as np"

    FIELD_INIT = _FIELD_INIT
    OPS = {
        **Emitter.OPS,
        "exp": "np.exp({0})",
        "log": "np.log({0})",
        "sqrt": "np.sqrt({0})",
        "abs": "np.abs({0})",
        "softplus": "np.logaddexp(0.0, {0})",
        "clamp": "np.clip({0}, {low}, {high})",
        "where": "np.where({0}, {1}, {2})",
        "softmax": "_softmax({0})",
        "cumsum": "np.cumsum({0}, axis=-1)",
        "pad": "_pad_last({0}, {before}, {after}, {value})",
        "bucket": "np.clip(np.sum({1}[..., None] >= {0}, axis=-1) - 1, 0, {last})",
        "gather": "_gather({0}, {1})",
        "reshape": "{0}.reshape({0}.shape[:-{ndims}] + {shape})",
        "transpose": "_transpose_last({0}, {perm})",
        "tanh": "np.tanh({0})",
        "sigmoid": "np.exp(-np.logaddexp(0.0, -{0}))",
        "log_sigmoid": "-np.logaddexp(0.0, -{0})",
        "clamp_st": "np.clip({0}, {low}, {high})",  # no gradients here: the value alone
        "relu": "np.maximum({0}, 0.0)",
        "leaky_relu": "np.where({0} > 0, {0}, {negative_slope} * {0})",
        "elu": "np.where({0} > 0, {0}, np.expm1(np.minimum({0}, 0.0)))",
        "erf": "_erf({0})",
        "linear": "np.matmul({0}, {1}) + {2}",
        "assign": "{0}[...] = {1}",
        "take": "np.take({0}, {1}, axis={axis})",
        "matvec": 'np.einsum("{subscripts}", {0}, {1})',
        "solve_triangular": "_solve_triangular({0}, {1}, lower={lower})",
        "concat": "np.concatenate([{0}, {1}], axis={axis})",
        "broadcast_batch": "np.broadcast_to({0}, {1}.shape[:-{event_ndims}] + {0}.shape[-1:])",
        "sum_event": "np.sum({0}, axis={axes})",
        "sum_all": "np.sum({0})",
        "batch_fill": "np.full({1}.shape[:-{event_ndims}], {0})",
        "batch_zeros": "np.zeros({0}.shape[:-{event_ndims}])",
    }
    OP_IMPORTS = {"erf": "import math"}

    CONSTANT = "self.{name} = {value}"
    PRELUDE = Path(__file__).with_name("prelude.py")
    BASE = ("_initial", "_dense", "_float64", "_checked", "_in_domain", "_Layer", "neutral_params",
            "load_neutral_params")  # fmt: skip
    UNCONDITIONAL = ("Flow",)
    CONDITIONAL = ("_checked_context", "_ConditionalLayer", "ConditionalFlow")
    EMBEDDING = ("EmbeddedFlow",)
    FIELD_HELPERS = {"matrix": ("_identity",)}
    OP_HELPERS = {
        "loop": ("_repeat",),
        "transpose": ("_transpose_last",),
        "batch_mean": ("_batch_mean",),
        "conv2d": ("_conv", "_conv2d"),
        "erf": ("_erf",),
        "gather": ("_gather",),
        "pad": ("_pad_last",),
        "softmax": ("_softmax",),
        "solve_triangular": ("_solve_triangular",),
        "squeeze2x2": ("_squeeze2x2",),
        "unsqueeze2x2": ("_unsqueeze2x2",),
    }

    def layer_class(
        self, name, plan, forward, inverse, training=None, methods=(), constants=()
    ) -> str:
        init = [self.field_init(f.kind).format(name=f.name, shape=self.field_shape(plan, f))
                for f in plan.fields]
        uses_rng = any(
            f.kind in WEIGHT_KINDS for f in plan.fields
        )
        init += ["self.training = True  # a training mode: batch statistics"] * (
            training is not None
        )
        base, ctx = ("_ConditionalLayer", ["context_dim"]) if plan.context else ("_Layer", [])
        out = ["output_shape"] if plan.output_shape != plan.event_shape else []
        return "\n".join([
            f"class {name}({base}):",
            f'    """{plan.doc}\n    """',
            "",
            *self.domain_lines(plan),
            signature("__init__", ["self", "*", *plan.args, "event_shape", *out, *ctx, "init",
                                   "rng=None"], 1),  # fmt: skip
            block([f"super().__init__({', '.join(['event_shape', *out, *ctx])})"]
                  + ["rng = rng if rng is not None else np.random.default_rng(0)"] * uses_rng
                  + init + list(constants), 2),  # fmt: skip
            "",
            traced_methods(forward, inverse, "Generated from flowbridge.layers.", bool(plan.context),
                           training, methods),  # fmt: skip
            "",
            neutral_params_method(plan),
        ])  # fmt: skip

    def embedding_class(self, plan, body) -> str:
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

    def flow_code(self, spec, calls, embedding=None) -> str:
        layers = "\n".join(
            "        " + call(name, args, {"init": f"init[{i}]", "rng": "rng"}, 8) + ","
            for i, (name, args) in enumerate(calls)
        )
        make, own = ("ConditionalFlow(layers, CONTEXT_DIM)" if spec.context_dim else "Flow(layers)"), ""
        if embedding is not None:
            make = "EmbeddedFlow(layers, embedding)"
            own = "\n    " + call(
                "embedding = ContextEmbedding", embedding.args,
                {"init": '_under(PARAM_INIT, "context_embedding.")', "rng": "rng"}, 4)  # fmt: skip
        return f'''def build_flow(params=None, seed=0):
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
    return flow'''
