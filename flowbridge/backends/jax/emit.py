"""JAX emitter: IR ops as ``jax.numpy`` calls, layers as pytrees of their weights.

The layers are plain classes like the NumPy reference's, registered as pytrees by the
prelude's ``_Tree`` (children: the weights under their neutral names), so every forward,
inverse and log-det is a pure function of the flow that ``jax.jit``, ``jax.grad`` and
``jax.vmap`` transform. State is functional: a batch norm's training-mode forward writes
each running average into an ``updates`` dict it returns (:meth:`JaxEmitter.effect`),
never in place.
"""

from __future__ import annotations

from pathlib import Path

from ...layers import WEIGHT_KINDS
from ...source import block, call, embed_methods, neutral_params_method, signature, traced_methods
from ..contract import Emitter

_FIELD_INIT = {
    "dense": "self.kernels, self.biases = _dense(sizes, init, rng, self.dtype)",
    "conv": "self.kernels, self.biases = _conv(sizes, kernel_size, init, rng, self.dtype)",
    "constant": "self.{name} = np.asarray({name}, self.dtype)",
    "vector": 'self.{name} = _initial(init["{name}"], {shape}, rng, self.dtype)',
    "channel": 'self.{name} = _initial(init["{name}"], {shape}[:1], rng, self.dtype)',
    "state": 'self.{name} = _initial(init["{name}"], {shape}[:1], rng, self.dtype)',
    "matrix": 'self.{name} = _identity(init["{name}"], {shape}, rng, self.dtype)',
    "index": "self.{name} = np.asarray({name}, dtype=np.int32)",
    "int": "self.{name} = {name}",
}


class JaxEmitter(Emitter):
    """JAX: layers as pytrees of their weights, pure functions throughout."""

    TITLE = "JAX (jax.numpy; pytrees for jax.jit, jax.grad and jax.vmap)"
    USAGE = """Use: flow = build_flow(params, dtype="float32"); flow.forward(x); flow.inverse(y);
flow.forward_log_det_jacobian(x); flow.inverse_log_det_jacobian(y). The flow is a
pytree of its weights: jax.jit(lambda flow, x: flow.forward(x))(flow, x) and
jax.grad(loss)(flow) work. float64 needs jax.config.update("jax_enable_x64", True)."""
    CONDITIONAL_USAGE = """Use: flow = build_flow(params, dtype="float32"); with a context c of shape
(*batch, {context_dim}) (broadcast to x's batch): flow.forward(x, c); flow.inverse(y, c);
flow.forward_log_det_jacobian(x, c); flow.inverse_log_det_jacobian(y, c). The flow is a
pytree of its weights (jax.jit, jax.grad, jax.vmap). float64 needs
jax.config.update("jax_enable_x64", True)."""
    IMAGE_SHAPES = "Shapes: images are (*batch, C, H, W), channels first; log-dets are (*batch,)."
    IMPORTS = CONDITIONAL_IMPORTS = "import functools\n\nimport jax\nimport jax.numpy as jnp\nimport numpy as np"

    FIELD_INIT = _FIELD_INIT
    OPS = {
        **Emitter.OPS,
        "exp": "jnp.exp({0})",
        "log": "jnp.log({0})",
        "sqrt": "jnp.sqrt({0})",
        "abs": "jnp.abs({0})",
        "softplus": "jax.nn.softplus({0})",
        "clamp": "jnp.clip({0}, {low}, {high})",
        "where": "jnp.where({0}, {1}, {2})",
        "softmax": "jax.nn.softmax({0}, axis=-1)",
        "cumsum": "jnp.cumsum({0}, axis=-1)",
        "pad": "_pad_last({0}, {before}, {after}, {value})",
        "bucket": "jnp.clip(jnp.sum({1}[..., None] >= {0}, axis=-1) - 1, 0, {last})",
        "gather": "_gather({0}, {1})",
        "reshape": "{0}.reshape({0}.shape[:-{ndims}] + {shape})",
        "transpose": "_transpose_last({0}, {perm})",
        "tanh": "jnp.tanh({0})",
        "sigmoid": "jax.nn.sigmoid({0})",
        "log_sigmoid": "jax.nn.log_sigmoid({0})",
        "clamp_st": "_clamp_straight_through({0}, {low}, {high})",
        "relu": "jax.nn.relu({0})",
        "leaky_relu": "jnp.where({0} > 0, {0}, {negative_slope} * {0})",
        "elu": "jnp.where({0} > 0, {0}, jnp.expm1(jnp.minimum({0}, 0.0)))",
        "erf": "jax.lax.erf({0})",
        "linear": "_linear({0}, {1}, {2})",
        "assign": 'updates["{0}"] = {1}',  # written by effect(): the state's local name
        "take": "jnp.take({0}, {1}, axis={axis})",
        "matvec": 'jnp.einsum("{subscripts}", {0}, {1})',
        "solve_triangular": "jax.scipy.linalg.solve_triangular({0}, {1}, lower={lower})",
        "concat": "jnp.concatenate([{0}, {1}], axis={axis})",
        "broadcast_batch": "jnp.broadcast_to({0}, {1}.shape[:-{event_ndims}] + {0}.shape[-1:])",
        "sum_event": "jnp.sum({0}, axis={axes})",
        "sum_all": "jnp.sum({0})",
        "batch_fill": "jnp.full({1}.shape[:-{event_ndims}], {0}, {1}.dtype)",
        "batch_zeros": "jnp.zeros({0}.shape[:-{event_ndims}], {0}.dtype)",
    }

    CONSTANT = "self.{name} = np.asarray({value})"
    PRELUDE = Path(__file__).with_name("prelude.py")
    BASE = ("_initial", "_dense", "_dtype", "_real", "_checked", "_in_domain", "_static_key",
            "_Static", "_neutral_set", "_Tree", "_Layer", "_blank", "_signature", "_paddable",
            "_as_identity", "_runs", "_block", "_scan_step", "_traced", "_Stack", "_pack",
            "_unpack", "_through_parts", "_copied", "_Sequence", "_zeros_batch", "neutral_params",
            "_replaced", "replace", "load_neutral_params")  # fmt: skip
    UNCONDITIONAL = ("Flow",)
    CONDITIONAL = ("_checked_context", "_ConditionalLayer", "ConditionalFlow")
    EMBEDDING = ("EmbeddedFlow",)
    FIELD_HELPERS = {"matrix": ("_identity",)}
    OP_HELPERS = {
        "loop": ("_repeat",),
        "transpose": ("_transpose_last",),
        "batch_mean": ("_batch_mean",),
        "clamp_st": ("_clamp_straight_through",),
        "conv2d": ("_conv", "_conv2d"),
        "gather": ("_gather",),
        "linear": ("_linear",),
        "pad": ("_pad_last",),
        "squeeze2x2": ("_squeeze2x2",),
        "unsqueeze2x2": ("_unsqueeze2x2",),
    }

    def effect(self, op: str, args: list[str]) -> str:
        """A state update collected, not written: ``updates["running_mean"] = new_mean``
        (the state's local neutral name), which the training-mode forward returns."""
        if op == "assign":
            return self.OPS[op].format(args[0].removeprefix("self."), args[1])
        return super().effect(op, args)

    def layer_class(
        self, name, plan, forward, inverse, training=None, methods=(), constants=()
    ) -> str:
        init = [self.field_init(f.kind).format(name=f.name, shape=self.field_shape(plan, f))
                for f in plan.fields]
        uses_rng = any(
            f.kind in WEIGHT_KINDS for f in plan.fields
        )
        base, ctx = ("_ConditionalLayer", ["context_dim"]) if plan.context else ("_Layer", [])
        out = ["output_shape"] if plan.output_shape != plan.event_shape else []
        train = []
        if training is not None:
            train = [
                "",
                "    def _forward_training(self, x):",
                '        """(y, log|det dy/dx|, updates) from the batch\'s statistics: updates',
                "        holds the running averages' new values, {local name: array}. Generated",
                '        from flowbridge.layers."""',
                "        updates = {}",
                *("        " + ln for ln in training),
                "        return y, log_det, updates",
            ]
        return "\n".join([
            f"class {name}({base}):",
            f'    """{plan.doc}\n    """',
            "",
            *self.domain_lines(plan),
            *self.index_lines(plan),
            signature("__init__", ["self", "*", *plan.args, "event_shape", *out, *ctx, "init",
                                   "rng=None", 'dtype="float32"'], 1),  # fmt: skip
            block([f"super().__init__({', '.join(['event_shape', *out, *ctx])}, dtype=dtype)"]
                  + ["rng = rng if rng is not None else np.random.default_rng(0)"] * uses_rng
                  + init + list(constants), 2),  # fmt: skip
            "",
            traced_methods(forward, inverse, "Generated from flowbridge.layers.", bool(plan.context),
                           None, methods),  # fmt: skip
            *train,
            "",
            neutral_params_method(plan),
        ])  # fmt: skip

    def index_lines(self, plan) -> list[str]:
        """The class-body line naming a layer's index fields (``_INDEX_FIELDS``: the
        static arrays that may differ between the steps of the prelude's scan over
        repeated layers) and, for a layer that is the identity when they hold
        ``0..n-1`` (``plan.identity_at_arange``), ``_IDENTITY_AT_ARANGE = True`` (the
        scan may pad its last block with such a copy), then a blank line; none for a
        layer without index fields."""
        names = tuple(f.name for f in plan.fields if f.kind == "index")
        quoted = ", ".join(f'"{name}"' for name in names) + "," * (len(names) == 1)
        identity = ["    _IDENTITY_AT_ARANGE = True"] if plan.identity_at_arange else []
        return [f"    _INDEX_FIELDS = ({quoted})", *identity, ""] if names else []

    def embedding_class(self, plan, body) -> str:
        return "\n".join([
            "class ContextEmbedding(_Tree):",
            f'    """{plan.doc}\n    """',
            "",
            '    def __init__(self, *, sizes, init, rng=None, dtype="float32"):',
            "        rng = rng if rng is not None else np.random.default_rng(0)",
            "        self.context_dim = sizes[0]",
            "        self.dtype = _dtype(dtype)",
            '        self.kernels, self.biases = _dense(sizes, init, rng, self.dtype, prefix="")',
            "",
            "    def __call__(self, context):",
            '        """The features (*batch, features) of a context (*batch, context_dim)."""',
            "        return self._embed(_checked_context(self, context))",
            "",
            embed_methods(plan, body),
        ])  # fmt: skip

    def flow_code(self, spec, calls, embedding=None) -> str:
        extra = {"init": "init[{i}]", "rng": "rng", "dtype": "dtype"}
        layers = "\n".join(
            "        " + call(name, args, {**extra, "init": f"init[{i}]"}, 8) + ","
            for i, (name, args) in enumerate(calls)
        )
        make, own = ("ConditionalFlow(layers, CONTEXT_DIM)" if spec.context_dim else "Flow(layers)"), ""
        if embedding is not None:
            make = "EmbeddedFlow(layers, embedding)"
            own = "\n    " + call(
                "embedding = ContextEmbedding", embedding.args,
                {"init": '_under(PARAM_INIT, "context_embedding.")', "rng": "rng",
                 "dtype": "dtype"}, 4)  # fmt: skip
        return f'''def build_flow(params=None, seed=0, dtype="float32"):
    """The flow in ``dtype`` (float32, or float64 with JAX's 64-bit mode on);
    ``params`` (optional) maps the neutral names of PARAM_SHAPES to arrays, else weights
    start by PARAM_INIT (drawn with NumPy's generator at ``seed``)."""
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
        flow = load_neutral_params(flow, params)
    return flow'''
