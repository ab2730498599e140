"""The pyro backend's prelude: what every generated pyro module needs at run time, as
real code (imported, linted and tested here) that flowbridge.codegen inlines into each
generated module, definition by definition, from this source."""

from __future__ import annotations

import torch
from pyro.distributions.conditional import (
    ConditionalComposeTransformModule,
    ConditionalTransformModule,
)
from pyro.distributions.torch_transform import ComposeTransformModule, TransformModule
from torch.distributions import constraints
from torch.distributions.transforms import Transform


def _assign(state, value):
    """A running average (a buffer) set to ``value``, outside autograd."""
    with torch.no_grad():
        state.copy_(value)


def _batch_mean(x, event_ndims):
    """The mean per channel of an image (C, H, W) or per entry of a vector, over every
    batch dimension (and H, W): (C,)."""
    flat = x.reshape(-1, *x.shape[x.dim() - event_ndims :])
    return flat.mean(dim=(0, 2, 3) if event_ndims == 3 else 0)


def _clamp_straight_through(x, low, high):
    """clamp(x, low, high) in value, exact at any magnitude; gradient 1 (straight through)."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return x.clamp(low, high)  # no gradient to pass: the clamp alone
    return x.detach().clamp(low, high) + (x - x.detach())


def _conv(sizes, kernel_size, init):
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
    return out.reshape(*x.shape[:-3], *out.shape[-3:])


def _repeat(step, count, state, *args):
    """``state = step(state, *args)``, ``count`` times: a loop over a method written once
    (an autoregressive layer's D-pass direction)."""
    for _ in range(count):
        state = step(state, *args)
    return state


def _gather(values, index):
    """values[..., index] along the last axis: values (..., K), index (...) of integers,
    their leading dims broadcast."""
    shape = torch.broadcast_shapes(values.shape[:-1], index.shape)
    values = values.expand(*shape, values.shape[-1])
    return values.gather(-1, index.expand(shape).unsqueeze(-1)).squeeze(-1)


def _transpose_last(x, perm):
    """x with its last ``len(perm)`` dims permuted (result dim i is dim ``perm[i]``)."""
    lead = x.dim() - len(perm)
    return x.permute(*range(lead), *(lead + i for i in perm))


def _squeeze2x2(x):
    """(*batch, C, H, W) -> (*batch, 4C, H/2, W/2): y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]."""
    c, height, width = x.shape[-3:]
    y = x.reshape(-1, c, height // 2, 2, width // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return y.reshape(*x.shape[:-3], 4 * c, height // 2, width // 2)


def _unsqueeze2x2(y):
    """The inverse of a 2x2 squeeze: (*batch, 4C, H/2, W/2) -> (*batch, C, H, W)."""
    c4, height, width = y.shape[-3:]
    x = y.reshape(-1, c4 // 4, 2, 2, height, width).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(*y.shape[:-3], c4 // 4, 2 * height, 2 * width)


def _state(bound, shape):
    """A running average's start, as PARAM_INIT says: a buffer, not a parameter."""
    return _initial(bound, shape).detach()


def _initial(bound, shape):
    """A parameter uniform in +-bound, or zeros where the bound is 0 (PARAM_INIT)."""
    if bound == 0.0:
        return torch.nn.Parameter(torch.zeros(shape))
    return torch.nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


def _identity(bound, shape):
    """A square matrix parameter (an LU factorisation's packed factors): the identity,
    plus uniform in +-bound where the bound is not 0 (PARAM_INIT)."""
    return torch.nn.Parameter(torch.eye(shape[0]) + _initial(bound, shape).detach())


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


def _in_domain(layer, value, name):
    """``value`` if every entry lies in the layer's ``domain_interval`` (None: the reals,
    nothing to check); else a ValueError naming the layer, the input and the interval (a
    NaN lies in no interval). Called only when validating (``validate_args``)."""
    if layer.domain_interval is None:
        return value
    low, high = layer.domain_interval
    outside = ~((value >= low) & (value <= high))
    if outside.any():
        raise ValueError(
            f"{type(layer).__name__}: {name}: expected values in [{low:g}, {high:g}] (the "
            f"layer's domain), got {value[outside].flatten()[0].item():g} "
            f"({int(outside.sum())} of {value.numel()} entries outside)"
        )
    return value


def _validating(flow, validate_args=True):
    """``flow`` (and each of its layers) checking, or not, that inputs lie in the
    layers' domains (a logit's [0, 1]), as TFP's ``validate_args``: off by default, so
    the default path pays nothing for it."""
    for module in flow.modules():
        if hasattr(type(module), "validate_args"):
            module.validate_args = validate_args
    return flow


class _Layer(TransformModule):
    """Pyro plumbing shared by every layer: input checks, cache-aware log-det,
    real-vector domain. A layer whose input is not any real vector (a logit's data in
    [0, 1]) says so in ``domain_interval``; with ``validate_args`` on (build_flow's
    argument), its input is checked against it."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    domain_interval = None  # the closed interval every input entry lies in; None: the reals
    validate_args = False  # check inputs against domain_interval (build_flow's argument)

    def __init__(self, event_shape, output_shape=None):
        super().__init__(cache_size=1)
        self.event_shape = tuple(event_shape)
        self.output_shape = tuple(output_shape or event_shape)
        self._cached_log_det = None

    def forward_with_log_det(self, x):
        """(y, log|det dy/dx|) for x of shape (*batch, *event_shape)."""
        x = _checked(self, x, "x", self.event_shape)
        if self.validate_args:
            x = _in_domain(self, x, "x")
        return self._forward_with_log_det(x)

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
    theirs (``0.kernels.0``, ...). A conditional flow at one context is one too. With
    ``validate_args`` on, its input is checked against its first layer's domain (only a
    first layer may have one: a logit's [0, 1])."""

    __call__ = Transform.__call__  # ComposeTransform's would call the layers one by one
    _call = _Layer._call
    _inverse = _Layer._inverse
    log_abs_det_jacobian = _Layer.log_abs_det_jacobian
    validate_args = False

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
        if self.validate_args:
            x = _in_domain(self[0], x, "x")
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
        return y, log_det


def _checked_context(layer, context, x=None):
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


def _needs_context(owner, call):
    """The TypeError for a conditional flow or layer used as a plain transform, ``call``
    being what was called (``"{t}.inv(y)"``, with ``{t}`` for the flow or layer)."""
    t = "layer" if isinstance(owner, _ConditionalLayer) else "flow"
    return TypeError(
        f"{type(owner).__name__}: {call.format(t=t)} needs a context: call "
        f"{t}.condition(c) first, with c of shape (*batch, {owner.context_dim}), and use "
        f"the transform it returns: {call.format(t=f'{t}.condition(c)')}"
    )


class _ConditionalInverse(ConditionalTransformModule):
    """A conditional flow's or layer's inverse (``.inv``): ``condition(c)`` is the
    inverse at ``c``; called without a context, a TypeError that says so."""

    def __init__(self, transform):
        super().__init__()
        self._transform = transform

    @property
    def inv(self):
        return self._transform

    def condition(self, context):
        return self._transform.condition(context).inv

    def forward(self, *args, **kwargs):
        raise _needs_context(self._transform, "{t}.inv(y)")

    def log_abs_det_jacobian(self, x, y):
        raise _needs_context(self._transform, "{t}.inv.log_abs_det_jacobian(y, x)")


class _NeedsContext:
    """The plain-transform calls of a conditional flow or layer (``t(x)``, ``t.inv(y)``,
    ``t.log_abs_det_jacobian(x, y)``): a TypeError saying to call ``t.condition(c)``
    first, where torch's would say that a "forward" function is missing."""

    def forward(self, *args, **kwargs):
        raise _needs_context(self, "{t}(x)")

    def log_abs_det_jacobian(self, x, y):
        raise _needs_context(self, "{t}.log_abs_det_jacobian(x, y)")

    @property
    def inv(self):
        return _ConditionalInverse(self)


class _ConditionalLayer(_NeedsContext, ConditionalTransformModule):
    """Pyro plumbing of a layer that reads the context: ``condition(context)`` is the
    layer at that context, a Transform with the checks and caches of every layer."""

    def __init__(self, event_shape, context_dim):
        super().__init__()
        self.event_shape = self.output_shape = tuple(event_shape)
        self.context_dim = context_dim

    def forward_with_log_det(self, x, context):
        """(y, log|det dy/dx|) for x (*batch, *event_shape), context (*batch, context_dim)."""
        x = _checked(self, x, "x", self.event_shape)
        return self._forward_with_log_det(x, _checked_context(self, context, x))

    def inverse_with_log_det(self, y, context):
        """(x, log|det dx/dy|) for y (*batch, *event_shape), context (*batch, context_dim)."""
        y = _checked(self, y, "y", self.output_shape)
        return self._inverse_with_log_det(y, _checked_context(self, context, y))

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


class ConditionalFlow(_NeedsContext, ConditionalComposeTransformModule):
    """The layers as one conditional transform. ``condition(c)`` is the flow at the
    context ``c``: a ComposeTransformModule of the layers at ``c`` (``.parts``) that
    checks x and c once, runs the layers' traced bodies in one loop (the context to the
    layers that read it), sums the log-dets as they come and caches the last
    ``(x, y, log-det)``. ``flow[i]`` is layer i (each with its own ``condition``), and the
    state_dict keys are the layers' (``0.kernels.0``, ...), as for a
    ConditionalComposeTransformModule of them. With ``validate_args`` on, its input is
    checked against its first layer's domain, as a Flow's."""

    validate_args = False

    def __init__(self, layers, context_dim):
        super().__init__(layers)
        weighted = [i for i, layer in enumerate(layers) if _a_weight(layer) is not None]
        self.weighted = weighted[0] if weighted else 0
        self.reads_context = [isinstance(layer, _ConditionalLayer) for layer in layers]
        self.event_shape = layers[0].event_shape
        self.context_dim = context_dim  # what the layers read (a flow may have none that do)

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
        if self.flow.validate_args:
            x = _in_domain(self.flow[0], x, "x")
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
        return y, log_det


class EmbeddedFlow(_NeedsContext, ConditionalTransformModule):
    """The flow behind its context embedding: ``condition(c)`` embeds ``c`` once
    (``self.embedding``) and conditions the layers (``self.layers``, a ConditionalFlow)
    on the features."""

    def __init__(self, layers, embedding):
        super().__init__()
        self.embedding = embedding
        self.layers = ConditionalFlow(layers, embedding.kernels[-1].shape[-1])
        self.context_dim = embedding.context_dim  # the context's size, before embedding

    def condition(self, context):
        return self.layers.condition(self.embedding(context))


def neutral_params(flow):
    """{neutral name: parameter} of a flow made by build_flow (live tensors): the context
    embedding's first, where the flow has one, then each layer's."""
    params = {}
    embedding = getattr(flow, "embedding", None)
    if embedding is not None:
        for name, value in embedding.neutral_params().items():
            params[f"context_embedding.{name}"] = value
    layers = flow.layers if embedding is not None else flow
    for i, layer in enumerate(layers):
        for name, value in layer.neutral_params().items():
            params[f"layers.{i}.{name}"] = value
    return params


def load_neutral_params(flow, params):
    """Copy ``params`` (neutral names -> arrays) into ``flow``, checking names and shapes."""
    own = neutral_params(flow)
    missing, extra = sorted(own.keys() - params.keys()), sorted(params.keys() - own.keys())
    if missing or extra:
        raise KeyError(f"params do not fit the flow: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for name, target in own.items():
            value = torch.as_tensor(params[name]).to(dtype=target.dtype, device=target.device)
            if tuple(value.shape) != tuple(target.shape):
                got, want = tuple(value.shape), tuple(target.shape)
                raise ValueError(f"{name}: expected shape {want}, got {got}")
            target.copy_(value)
    return flow
