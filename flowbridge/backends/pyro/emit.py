"""Pyro emitter: IR ops as torch calls, layers as ``TransformModule`` subclasses."""

from __future__ import annotations

from pathlib import Path

from ...layers import Plan
from ...source import block, call, embed_methods, neutral_params_method, signature, traced_methods
from ..contract import Emitter

_FIELD_INIT = {
    "dense": "self.kernels, self.biases = _dense(sizes, init)",
    "conv": "self.kernels, self.biases = _conv(sizes, kernel_size, init)",
    "constant": 'self.register_buffer("{name}", torch.tensor({name}))',
    "vector": 'self.{name} = _initial(init["{name}"], {shape})',
    "channel": 'self.{name} = _initial(init["{name}"], {shape}[:1])',
    "state": 'self.register_buffer("{name}", _state(init["{name}"], {shape}[:1]))',
    "matrix": 'self.{name} = _identity(init["{name}"], {shape})',
    "index": 'self.register_buffer("{name}", torch.tensor({name}, dtype=torch.long))',
    "int": "self.{name} = {name}",
}


def _real(shape: tuple[int, ...], domain: str = "real") -> str:
    """Pyro's constraint for events of ``shape`` with values in ``domain``."""
    n = len(shape)
    if domain == "real" and n == 1:
        return "constraints.real_vector"
    return f"constraints.independent(constraints.{domain}, {n})"


class PyroEmitter(Emitter):
    """Pyro: ``TransformModule`` layers in one generated ``Flow`` (a
    ``ComposeTransformModule``); conditional layers as ``ConditionalTransformModule``s."""

    TITLE = "Pyro TransformModules"
    IMAGE_SHAPES = "Shapes: images are (*batch, C, H, W), channels first; log-dets are (*batch,)."
    USAGE = """Use: flow = build_flow(params); flow(x); flow.inv(y); flow.log_abs_det_jacobian(x, y).
The flow is a Flow, a pyro ComposeTransformModule that runs its layers in one call (flow[i] is
layer i): pass it to dist.TransformedDistribution or AutoNormalizingFlow, register it with
pyro.module, move it with .to(device, dtype)."""
    CONDITIONAL_USAGE = """Use: flow = build_flow(params); at = flow.condition(c), the flow at a context c of shape
(*batch, {context_dim}) (broadcast to x's batch), a ComposeTransformModule: at(x), at.inv(y),
at.log_abs_det_jacobian(x, y). The flow is a ConditionalFlow, a pyro
ConditionalComposeTransformModule that runs its layers in one call (flow[i] is layer i): pass
it to dist.ConditionalTransformedDistribution, register it with pyro.module, move it with
.to(device, dtype)."""
    IMPORTS = """import torch
from pyro.distributions.torch_transform import ComposeTransformModule, TransformModule
from torch.distributions import constraints
from torch.distributions.transforms import Transform"""
    CONDITIONAL_IMPORTS = """import torch
from pyro.distributions.conditional import (
    ConditionalComposeTransformModule,
    ConditionalTransformModule,
)
from pyro.distributions.torch_transform import ComposeTransformModule, TransformModule
from torch.distributions import constraints
from torch.distributions.transforms import Transform"""

    FIELD_INIT = _FIELD_INIT
    OPS = {
        **Emitter.OPS,
        "exp": "torch.exp({0})",
        "log": "torch.log({0})",
        "sqrt": "torch.sqrt({0})",
        "abs": "torch.abs({0})",
        # threshold 40, not torch's 20: log(1 + exp(x)) to float64 precision at every x
        "softplus": "torch.nn.functional.softplus({0}, threshold=40.0)",
        "clamp": "torch.clamp({0}, {low}, {high})",
        "where": "torch.where({0}, {1}, {2})",
        "softmax": "torch.softmax({0}, dim=-1)",
        "cumsum": "torch.cumsum({0}, dim=-1)",
        "pad": "torch.nn.functional.pad({0}, ({before}, {after}), value={value})",
        "bucket": "torch.clamp(({1}[..., None] >= {0}).sum(-1) - 1, 0, {last})",
        "gather": "_gather({0}, {1})",
        "reshape": "{0}.reshape({0}.shape[:-{ndims}] + {shape})",
        "transpose": "_transpose_last({0}, {perm})",
        "tanh": "torch.tanh({0})",
        "sigmoid": "torch.sigmoid({0})",
        "log_sigmoid": "torch.nn.functional.logsigmoid({0})",
        "clamp_st": "_clamp_straight_through({0}, {low}, {high})",
        "relu": "torch.relu({0})",
        "leaky_relu": "torch.nn.functional.leaky_relu({0}, {negative_slope})",
        "elu": "torch.nn.functional.elu({0})",
        "erf": "torch.erf({0})",
        "linear": "torch.nn.functional.linear({0}, {1}.T, {2})",  # fused addmm, as nn.Linear
        "assign": "_assign({0}, {1})",
        "take": "{0}.index_select({axis}, {1})",
        "matvec": 'torch.einsum("{subscripts}", {0}, {1})',
        "solve_triangular": "torch.linalg.solve_triangular({0}, {1}, upper={upper})",
        "concat": "torch.cat([{0}, {1}], dim={axis})",
        "broadcast_batch": "{0}.expand({1}.shape[:-{event_ndims}] + {0}.shape[-1:])",
        "sum_event": "{0}.sum({axes})",
        "sum_all": "{0}.sum()",
        "batch_fill": "{0}.expand({1}.shape[:-{event_ndims}])",
        "batch_zeros": "{0}.new_zeros({0}.shape[:-{event_ndims}])",
    }
    #: Ops written in place where their argument is a temporary of one of the given ops that
    #: nothing else reads (:func:`flowbridge.codegen.emit_body`): an activation overwrites the
    #: dense layer's output (as ``nn.ReLU(inplace=True)``), one buffer less per hidden layer.
    #: Their gradients read their outputs, and linear's and conv's do not read theirs.
    IN_PLACE = {
        "relu": ("torch.relu_({0})", ("linear", "conv2d")),
        "tanh": ("torch.tanh_({0})", ("linear", "conv2d")),
    }
    #: Two slices that cut a value in two at one bound, as one split (codegen.emit_body): its
    #: gradient joins the halves' gradients, where two slices' would each fill a zero tensor.
    SPLIT = "{0}.split({sizes}, dim={axis})"

    CONSTANT = 'self.register_buffer("{name}", {value}, persistent=False)'
    PRELUDE = Path(__file__).with_name("prelude.py")
    BASE = ("_initial", "_dense", "_a_weight", "_checked", "_in_domain", "_validating", "_Layer",
            "Flow", "neutral_params", "load_neutral_params")  # fmt: skip
    CONDITIONAL = ("_checked_context", "_needs_context", "_ConditionalInverse", "_NeedsContext",
                   "_ConditionalLayer", "_Conditioned", "ConditionalFlow",
                   "_ConditionedFlow")  # fmt: skip
    EMBEDDING = ("EmbeddedFlow",)
    OP_HELPERS = {
        "loop": ("_repeat",),
        "transpose": ("_transpose_last",),
        "assign": ("_assign",),
        "batch_mean": ("_batch_mean",),
        "clamp_st": ("_clamp_straight_through",),
        "conv2d": ("_conv", "_conv2d"),
        "gather": ("_gather",),
        "squeeze2x2": ("_squeeze2x2",),
        "unsqueeze2x2": ("_unsqueeze2x2",),
    }
    FIELD_HELPERS = {"state": ("_state",), "matrix": ("_identity",)}

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
            self.field_init(f.kind).format(name=f.name, shape=self.field_shape(plan, f))
            for f in plan.fields
        ]
        base, ctx = ("_ConditionalLayer", ["context_dim"]) if plan.context else ("_Layer", [])
        out = ["output_shape"] if plan.output_shape != plan.event_shape else []
        domains = []  # _Layer's are real vectors; other event ranks say their own
        if (len(plan.event_shape), len(plan.output_shape), plan.domain) != (1, 1, "real"):
            domains = [f"    domain = {_real(plan.event_shape, plan.domain)}",
                       f"    codomain = {_real(plan.output_shape)}", ""]  # fmt: skip
        return "\n".join([
            f"class {name}({base}):",
            f'    """{plan.doc}\n    """',
            "",
            *domains,
            *self.domain_lines(plan),
            signature("__init__", ["self", "*", *plan.args, "event_shape", *out, *ctx, "init"], 1),
            block([f"super().__init__({', '.join(['event_shape', *out, *ctx])})", *init,
                   *constants], 2),
            "",
            traced_methods(forward, inverse, "Generated from flowbridge.layers.", bool(plan.context),
                           training, methods),
            "",
            neutral_params_method(plan, "kernel.permute(2, 3, 1, 0)"),
        ])  # fmt: skip

    def embedding_class(self, plan, body: list[str]) -> str:
        return "\n".join([
            "class ContextEmbedding(torch.nn.Module):",
            f'    """{plan.doc}\n    """',
            "",
            "    def __init__(self, *, sizes, init):",
            "        super().__init__()",
            "        self.context_dim = sizes[0]",
            '        self.kernels, self.biases = _dense(sizes, init, prefix="")',
            "",
            "    def forward(self, context):",
            '        """The features (*batch, features) of a context (*batch, context_dim)."""',
            "        return self._embed(_checked_context(self, context))",
            "",
            embed_methods(plan, body),
        ])  # fmt: skip

    def flow_code(self, spec, calls: list[tuple[str, dict]], embedding=None) -> str:
        layers = "\n".join(
            "        " + call(name, args, {"init": f"init[{i}]"}, 8) + ","
            for i, (name, args) in enumerate(calls)
        )
        compose = "ConditionalFlow" if spec.context_dim else "Flow"
        make = "ConditionalFlow(layers, CONTEXT_DIM)" if spec.context_dim else "Flow(layers)"
        own, what = "", f"a {compose}"
        if embedding is not None:
            make = "EmbeddedFlow(layers, embedding)"
            what = "an EmbeddedFlow"
            init = {"init": '_under(PARAM_INIT, "context_embedding.")'}
            own = "\n    " + call("embedding = ContextEmbedding", embedding.args, init, 4)
        return f'''def build_flow(params=None, validate_args=False):
    """The flow as {what}; ``params`` (optional) maps the neutral
    names of PARAM_SHAPES to arrays or tensors, else weights start by PARAM_INIT.
    ``validate_args``: check that inputs lie in the layers' domains (off: no cost)."""
    init = _per_layer(PARAM_INIT, {len(calls)})
    # Long index lists stay compact:
    # fmt: off
    layers = [
{layers}
    ]
    # fmt: on{own}
    flow = _validating({make}, validate_args)
    if params is not None:
        load_neutral_params(flow, params)
    return flow'''
