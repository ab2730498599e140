"""Pyro emitter: IR ops as torch calls, layers as ``TransformModule`` subclasses."""

from __future__ import annotations

from ...codegen import (
    CONTEXT_METHODS,
    block,
    call,
    embed_methods,
    neutral_params_function,
    neutral_params_method,
    signature,
    traced_methods,
)
from ...layers import Plan

TITLE = "Pyro TransformModules"
IMAGE_SHAPES = "Shapes: images are (*batch, C, H, W), channels first; log-dets are (*batch,)."
USAGE = """Use: flow = build_flow(params); flow(x); flow.inv(y); flow.log_abs_det_jacobian(x, y).
The flow is a Flow, a pyro ComposeTransformModule that runs its layers in one call (flow[i] is
layer i): pass it to dist.TransformedDistribution or AutoNormalizingFlow, register it with
pyro.module, move it with .to(device, dtype)."""

IMPORTS = """import torch
from pyro.distributions.torch_transform import ComposeTransformModule, TransformModule
from torch.distributions import constraints
from torch.distributions.transforms import Transform"""

#: IR op -> torch expression; ``{0}``, ``{1}`` are arguments, ``{name}`` attributes.
OPS = {
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "neg": "-{0}",
    "exp": "torch.exp({0})",
    "log": "torch.log({0})",
    "tanh": "torch.tanh({0})",
    "sigmoid": "torch.sigmoid({0})",
    "log_sigmoid": "torch.nn.functional.logsigmoid({0})",
    "clamp_st": "_clamp_straight_through({0}, {low}, {high})",
    "relu": "torch.relu({0})",
    "leaky_relu": "torch.nn.functional.leaky_relu({0}, {negative_slope})",
    "elu": "torch.nn.functional.elu({0})",
    "erf": "torch.erf({0})",
    "linear": "torch.nn.functional.linear({0}, {1}.T, {2})",  # fused addmm, as nn.Linear
    "conv2d": "_conv2d({0}, {1}, {2})",
    "per_channel": "{0}[:, None, None]",
    "batch_mean": "_batch_mean({0}, {event_ndims})",
    "assign": "_assign({0}, {1})",
    "squeeze2x2": "_squeeze2x2({0})",
    "unsqueeze2x2": "_unsqueeze2x2({0})",
    "slice": "{0}[{index}]",
    "take": "{0}.index_select({axis}, {1})",
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
OP_IMPORTS: dict[str, str] = {}
OP_HELPERS = {
    "batch_mean": '''def _batch_mean(x, event_ndims):
    """The mean per channel of an image (C, H, W) or per entry of a vector, over every
    batch dimension (and H, W): (C,)."""
    flat = x.reshape(-1, *x.shape[x.dim() - event_ndims :])
    return flat.mean(dim=(0, 2, 3) if event_ndims == 3 else 0)''',
    "assign": '''def _assign(state, value):
    """A running average (a buffer) set to ``value``, outside autograd."""
    with torch.no_grad():
        state.copy_(value)''',
    "conv2d": '''def _conv(sizes, kernel_size, init):
    """Convolutions sizes[0] -> ... -> sizes[-1] channels, each weight started by its
    bound in ``init`` (the layer's entries of PARAM_INIT). Kernels are stored in torch's
    (out, in, k, k) layout; neutral_params gives them as (k, k, in, out) views."""
    kernels, biases = [], []
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        shape = (n_out, n_in, kernel_size, kernel_size)
        kernels.append(_initial(init[f"conditioner.{j}.kernel"], shape))
        biases.append(_initial(init[f"conditioner.{j}.bias"], (n_out,)))
    return torch.nn.ParameterList(kernels), torch.nn.ParameterList(biases)


def _conv2d(x, kernel, bias):
    """Stride-1 "same" convolution of x (*batch, C_in, H, W) with a (C_out, C_in, k, k)
    kernel: (*batch, C_out, H, W)."""
    out = torch.nn.functional.conv2d(x.reshape(-1, *x.shape[-3:]), kernel, bias, padding="same")
    return out.reshape(*x.shape[:-3], *out.shape[-3:])''',
    "squeeze2x2": '''def _squeeze2x2(x):
    """(*batch, C, H, W) -> (*batch, 4C, H/2, W/2): y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]."""
    c, height, width = x.shape[-3:]
    y = x.reshape(-1, c, height // 2, 2, width // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return y.reshape(*x.shape[:-3], 4 * c, height // 2, width // 2)''',
    "unsqueeze2x2": '''def _unsqueeze2x2(y):
    """The inverse of a 2x2 squeeze: (*batch, 4C, H/2, W/2) -> (*batch, C, H, W)."""
    c4, height, width = y.shape[-3:]
    x = y.reshape(-1, c4 // 4, 2, 2, height, width).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(*y.shape[:-3], c4 // 4, 2 * height, 2 * width)''',
    "clamp_st": '''def _clamp_straight_through(x, low, high):
    """clamp(x, low, high) in value, exact at any magnitude; gradient 1 (straight through)."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return x.clamp(low, high)  # no gradient to pass: the clamp alone
    return x.detach().clamp(low, high) + (x - x.detach())''',
}

FIELD_HELPERS = {
    "state": '''def _state(bound, shape):
    """A running average's start, as PARAM_INIT says: a buffer, not a parameter."""
    return _initial(bound, shape).detach()''',
}

HELPERS = '''def _initial(bound, shape):
    """A parameter uniform in +-bound, or zeros where the bound is 0 (PARAM_INIT)."""
    if bound == 0.0:
        return torch.nn.Parameter(torch.zeros(shape))
    return torch.nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


def _dense(sizes, init, prefix="conditioner."):
    """Dense layers sizes[0] -> ... -> sizes[-1], kernels (in, out), each weight started
    by its bound in ``init`` (the layer's entries of PARAM_INIT, named {prefix}{j}.*)."""
    kernels, biases = [], []
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        kernels.append(_initial(init[f"{prefix}{j}.kernel"], (n_in, n_out)))
        biases.append(_initial(init[f"{prefix}{j}.bias"], (n_out,)))
    return torch.nn.ParameterList(kernels), torch.nn.ParameterList(biases)


def _a_weight(layer):
    """One weight of a layer (of a Flow: of its first layer with weights), or None, found
    without .parameters() (which torch.compile cannot trace)."""
    if hasattr(layer, "weighted"):
        layer = layer[layer.weighted]
    if hasattr(layer, "kernels"):
        return layer.kernels[0]
    return getattr(layer, "log_scale", getattr(layer, "log_gamma", None))


def _checked(layer, value, name, event):
    """``value`` if it is a real floating tensor of shape (*batch, *event) in the layer's
    dtype and device; else a TypeError or ValueError naming the expected shape."""
    where = f"{type(layer).__name__}: {name}"
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor, got {type(value).__name__}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"{where}: expected a real floating-point tensor, got dtype {value.dtype}")
    if value.dim() < len(event) or tuple(value.shape[value.dim() - len(event) :]) != event:
        want = ", ".join(["*batch", *map(str, event)])
        raise ValueError(f"{where}: expected shape ({want}), got {tuple(value.shape)}")
    weight = _a_weight(layer)
    if weight is not None and (value.dtype != weight.dtype or value.device != weight.device):
        raise TypeError(
            f"{where}: expected dtype {weight.dtype} on {weight.device} (the layer's), "
            f"got {value.dtype} on {value.device}"
        )
    return value


class _Layer(TransformModule):
    """Pyro plumbing shared by every layer: input checks, cache-aware log-det,
    real-vector domain."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, event_shape, output_shape=None):
        super().__init__(cache_size=1)
        self.event_shape = tuple(event_shape)
        self.output_shape = tuple(output_shape or event_shape)
        self._cached_log_det = None

    def forward_with_log_det(self, x):
        """(y, log|det dy/dx|) for x of shape (*batch, *event_shape)."""
        return self._forward_with_log_det(_checked(self, x, "x", self.event_shape))

    def inverse_with_log_det(self, y):
        """(x, log|det dx/dy|) for y of shape (*batch, *output_shape)."""
        return self._inverse_with_log_det(_checked(self, y, "y", self.output_shape))

    def forward_shape(self, shape):
        return tuple(shape[: len(shape) - len(self.event_shape)]) + self.output_shape

    def inverse_shape(self, shape):
        return tuple(shape[: len(shape) - len(self.output_shape)]) + self.event_shape

    def _call(self, x):
        y, log_det = self.forward_with_log_det(x)
        self._cached_log_det = (x, y, log_det)
        return y

    def _inverse(self, y):
        x, log_det = self.inverse_with_log_det(y)
        self._cached_log_det = (x, y, -log_det)
        return x

    def log_abs_det_jacobian(self, x, y):
        cached = self._cached_log_det
        if cached is not None and cached[0] is x and cached[1] is y:
            return cached[2]
        return self.forward_with_log_det(x)[1]


class Flow(ComposeTransformModule):
    """The layers as one transform. ``flow(x)``, ``flow.inv(y)`` and
    ``flow.log_abs_det_jacobian(x, y)`` check their input once and run the layers' traced
    bodies in one loop, summing the log-dets as they come, and cache the last
    ``(x, y, log-det)`` as every layer does: ``log_prob`` after ``inv`` (or the log-det
    after a call) costs nothing. The layers stay what they are: ``flow[i]`` is layer i, a
    TransformModule with its own call, inverse and cache, and the state_dict keys are
    theirs (``0.kernels.0``, ...). A conditional flow at one context is one too."""

    __call__ = Transform.__call__  # ComposeTransform's would call the layers one by one
    _call = _Layer._call
    _inverse = _Layer._inverse
    log_abs_det_jacobian = _Layer.log_abs_det_jacobian

    def __init__(self, layers):
        super().__init__(layers, cache_size=1)
        self._cached_log_det = None
        # the layer whose weights give the dtype and device inputs must have
        weighted = [i for i, layer in enumerate(layers) if _a_weight(layer) is not None]
        self.weighted = weighted[0] if weighted else 0

    @property
    def inv(self):
        """The flow's inverse, one transform (not a chain of the layers' inverses)."""
        return Transform.inv.fget(self)

    def forward_with_log_det(self, x):
        """(y, log|det dy/dx|) for x of shape (*batch, *EVENT_SHAPE)."""
        x = _checked(self, x, "x", self[0].event_shape)
        log_det = 0.0
        for layer in self:
            x, layer_log_det = layer._forward_with_log_det(x)
            log_det = log_det + layer_log_det
        return x, log_det

    def inverse_with_log_det(self, y):
        """(x, log|det dx/dy|) for y of the flow's output shape."""
        y = _checked(self, y, "y", self[-1].output_shape)
        log_det = 0.0
        for layer in reversed(self):
            y, layer_log_det = layer._inverse_with_log_det(y)
            log_det = log_det + layer_log_det
        return y, log_det'''

CONDITIONAL_IMPORTS = """import torch
from pyro.distributions.conditional import (
    ConditionalComposeTransformModule,
    ConditionalTransformModule,
)
from pyro.distributions.torch_transform import ComposeTransformModule, TransformModule
from torch.distributions import constraints
from torch.distributions.transforms import Transform"""
CONDITIONAL_USAGE = """Use: flow = build_flow(params); at = flow.condition(c), the flow at a context c of shape
(*batch, {context_dim}) (broadcast to x's batch), a ComposeTransformModule: at(x), at.inv(y),
at.log_abs_det_jacobian(x, y). The flow is a ConditionalFlow, a pyro
ConditionalComposeTransformModule that runs its layers in one call (flow[i] is layer i): pass
it to dist.ConditionalTransformedDistribution, register it with pyro.module, move it with
.to(device, dtype)."""

CONDITIONAL_HELPERS = '''def _checked_context(layer, context, x=None):
    """``context`` if it is a real floating tensor of shape (*batch, context_dim) in x's
    dtype and device whose batch broadcasts to x's (without x, a context embedding's
    input: in the embedding's dtype and device); else a TypeError or ValueError."""
    where = f"{type(layer).__name__}: context"
    if not isinstance(context, torch.Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor, got {type(context).__name__}")
    if not context.dtype.is_floating_point:
        raise TypeError(f"{where}: expected a real floating-point tensor, got {context.dtype}")
    if context.dim() < 1 or context.shape[-1] != layer.context_dim:
        raise ValueError(
            f"{where}: expected shape (*batch, {layer.context_dim}) (the flow's context_dim), "
            f"got {tuple(context.shape)}"
        )
    like, whose = (x, "the input's") if x is not None else (layer.kernels[0], "the layer's")
    if context.dtype != like.dtype or context.device != like.device:
        raise TypeError(
            f"{where}: expected dtype {like.dtype} on {like.device} ({whose}), "
            f"got {context.dtype} on {context.device}"
        )
    if x is None:
        return context
    batch = tuple(x.shape[: x.dim() - len(layer.event_shape)])
    try:
        fits = tuple(torch.broadcast_shapes(context.shape[:-1], batch)) == batch
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"{where}: its batch shape {tuple(context.shape[:-1])} does not broadcast to "
            f"the input's {batch}"
        )
    return context


class _ConditionalLayer(ConditionalTransformModule):
    """Pyro plumbing of a layer that reads the context: ``condition(context)`` is the
    layer at that context, a Transform with the checks and caches of every layer."""

    def __init__(self, event_shape, context_dim):
        super().__init__()
        self.event_shape = self.output_shape = tuple(event_shape)
        self.context_dim = context_dim

''' + CONTEXT_METHODS + '''

    def condition(self, context):
        return _Conditioned(self, context)


class _Conditioned(Transform):
    """One layer at one context."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    _call = _Layer._call
    _inverse = _Layer._inverse
    log_abs_det_jacobian = _Layer.log_abs_det_jacobian

    def __init__(self, layer, context):
        super().__init__(cache_size=1)
        self.layer, self.context = layer, context
        self._cached_log_det = None

    def forward_with_log_det(self, x):
        return self.layer.forward_with_log_det(x, self.context)

    def inverse_with_log_det(self, y):
        return self.layer.inverse_with_log_det(y, self.context)


class ConditionalFlow(ConditionalComposeTransformModule):
    """The layers as one conditional transform. ``condition(c)`` is the flow at the
    context ``c``: a ComposeTransformModule of the layers at ``c`` (``.parts``) that
    checks x and c once, runs the layers' traced bodies in one loop (the context to the
    layers that read it), sums the log-dets as they come and caches the last
    ``(x, y, log-det)``. ``flow[i]`` is layer i (each with its own ``condition``), and the
    state_dict keys are the layers' (``0.kernels.0``, ...), as for a
    ConditionalComposeTransformModule of them."""

    def __init__(self, layers):
        super().__init__(layers)
        weighted = [i for i, layer in enumerate(layers) if _a_weight(layer) is not None]
        self.weighted = weighted[0] if weighted else 0
        self.reads_context = [isinstance(layer, _ConditionalLayer) for layer in layers]
        self.event_shape = layers[0].event_shape
        self.context_dim = next(
            layer.context_dim for layer in layers if isinstance(layer, _ConditionalLayer)
        )

    def condition(self, context):
        return _ConditionedFlow(self, context)


class _ConditionedFlow(Flow):
    """The flow at one context (ConditionalFlow.condition): a Flow of the layers at that
    context (``.parts``)."""

    def __init__(self, flow, context):
        super().__init__([layer.condition(context) for layer in flow.transforms])
        self.__dict__["flow"] = flow  # read, not owned: no submodule, no weights of its own
        self.context = context

    def forward_with_log_det(self, x):
        """(y, log|det dy/dx|) for x of shape (*batch, *EVENT_SHAPE)."""
        x = _checked(self.flow, x, "x", self.flow.event_shape)
        context = _checked_context(self.flow, self.context, x)
        log_det = 0.0
        for layer, reads in zip(self.flow, self.flow.reads_context, strict=True):
            if reads:
                x, layer_log_det = layer._forward_with_log_det(x, context)
            else:
                x, layer_log_det = layer._forward_with_log_det(x)
            log_det = log_det + layer_log_det
        return x, log_det

    def inverse_with_log_det(self, y):
        """(x, log|det dx/dy|) for y of shape (*batch, *EVENT_SHAPE)."""
        y = _checked(self.flow, y, "y", self.flow.event_shape)
        context = _checked_context(self.flow, self.context, y)
        log_det = 0.0
        flow = self.flow
        for layer, reads in zip(reversed(flow), reversed(flow.reads_context), strict=True):
            if reads:
                y, layer_log_det = layer._inverse_with_log_det(y, context)
            else:
                y, layer_log_det = layer._inverse_with_log_det(y)
            log_det = log_det + layer_log_det
        return y, log_det'''

EMBEDDING_HELPERS = '''class EmbeddedFlow(ConditionalTransformModule):
    """The flow behind its context embedding: ``condition(c)`` embeds ``c`` once
    (``self.embedding``) and conditions the layers (``self.layers``, a ConditionalFlow)
    on the features."""

    def __init__(self, layers, embedding):
        super().__init__()
        self.embedding = embedding
        self.layers = ConditionalFlow(layers)

    def condition(self, context):
        return self.layers.condition(self.embedding(context))'''


def embedding_class(plan, body: list[str]) -> str:
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


_FIELD_INIT = {
    "dense": "self.kernels, self.biases = _dense(sizes, init)",
    "conv": "self.kernels, self.biases = _conv(sizes, kernel_size, init)",
    "constant": 'self.register_buffer("{name}", torch.tensor({name}))',
    "vector": 'self.{name} = _initial(init["{name}"], {shape})',
    "channel": 'self.{name} = _initial(init["{name}"], {shape}[:1])',
    "state": 'self.register_buffer("{name}", _state(init["{name}"], {shape}[:1]))',
    "index": 'self.register_buffer("{name}", torch.tensor({name}, dtype=torch.long))',
    "int": "self.{name} = {name}",
}


def _real(shape: tuple[int, ...], domain: str = "real") -> str:
    """Pyro's constraint for events of ``shape`` with values in ``domain``."""
    n = len(shape)
    if domain == "real" and n == 1:
        return "constraints.real_vector"
    return f"constraints.independent(constraints.{domain}, {n})"


def layer_class(
    name: str, plan: Plan, forward: list[str], inverse: list[str], training: list[str] | None = None
) -> str:
    init = [_FIELD_INIT[f.kind].format(name=f.name, shape=_shape_arg(plan)) for f in plan.fields]
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
        signature("__init__", ["self", "*", *plan.args, "event_shape", *out, *ctx, "init"], 1),
        block([f"super().__init__({', '.join(['event_shape', *out, *ctx])})", *init], 2),
        "",
        traced_methods(forward, inverse, "Generated from flowbridge.layers.", bool(plan.context),
                       training),
        "",
        neutral_params_method(plan, "kernel.permute(2, 3, 1, 0)"),
    ])  # fmt: skip


def flow_code(spec, calls: list[tuple[str, dict]], embedding=None) -> str:
    layers = "\n".join(
        "        " + call(name, args, {"init": f"init[{i}]"}, 8) + ","
        for i, (name, args) in enumerate(calls)
    )
    compose = "ConditionalFlow" if spec.context_dim else "Flow"
    parts = "flow" if spec.context_dim else "flow.parts"
    make, own, what = f"{compose}(layers)", "", f"a {compose}"
    if embedding is not None:
        parts, make = "flow.layers", "EmbeddedFlow(layers, embedding)"
        what = "an EmbeddedFlow"
        init = {"init": '_under(PARAM_INIT, "context_embedding.")'}
        own = "\n    " + call("embedding = ContextEmbedding", embedding.args, init, 4)
    return f'''def build_flow(params=None):
    """The flow as {what}; ``params`` (optional) maps the neutral
    names of PARAM_SHAPES to arrays or tensors, else weights start by PARAM_INIT."""
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


{neutral_params_function(parts, embedding is not None, "parameter", " (live tensors)")}


def load_neutral_params(flow, params):
    """Copy ``params`` (neutral names -> arrays) into ``flow``, checking names and shapes."""
    own = neutral_params(flow)
    missing, extra = sorted(own.keys() - params.keys()), sorted(params.keys() - own.keys())
    if missing or extra:
        raise KeyError(f"params do not fit the flow: missing {{missing}}, unexpected {{extra}}")
    with torch.no_grad():
        for name, target in own.items():
            value = torch.as_tensor(params[name]).to(dtype=target.dtype, device=target.device)
            if tuple(value.shape) != tuple(target.shape):
                got, want = tuple(value.shape), tuple(target.shape)
                raise ValueError(f"{{name}}: expected shape {{want}}, got {{got}}")
            target.copy_(value)
    return flow'''


def _shape_arg(plan: Plan) -> str:
    """The constructor argument that gives a "vector" field its shape."""
    return "active_shape" if "active_shape" in plan.args else "event_shape"
