"""Every layer type's math, written once over the neutral IR (:mod:`flowbridge.ir`).

Each definition turns one spec layer into a :class:`Plan` (which generated class it
uses, the constructor's literal arguments, the neutral parameter shapes) and gives
``forward`` and ``inverse`` as functions of a parameter view ``p`` whose attributes are
symbolic (``p.kernel(0)`` stands for ``self.kernels[0]`` in every backend). Both return
``(output, log_det)``; ``inverse`` returns the log-det of the inverse map, so
``inverse log-det = -forward log-det`` at matching points. Log-dets have shape
``(*batch,)``.

Adding a layer type = one definition here (plus its spec model); no backend changes.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import spec as S
from .ir import Value, ops, source


@dataclass(frozen=True)
class Field:
    """One attribute of a generated layer class, built from a constructor argument.

    ``kind``: ``"mlp"`` (``sizes`` -> ``kernels[j]`` of shape ``(sizes[j], sizes[j+1])``
    and ``biases[j]``), ``"vector"`` (a learned vector of length ``dim``), ``"index"``
    (an integer buffer) or ``"int"`` (a plain Python int).
    """

    kind: str
    name: str


@dataclass(frozen=True)
class Plan:
    """A spec layer resolved against its input event shape.

    Layers share a generated class exactly when the class's emitted text is the same
    (:func:`flowbridge.codegen.generate` compares it): the docstring, the fields and both
    traced bodies, so no hand-kept key can let two different layers share a class.
    ``variant`` names what sets this configuration apart, as ``(short, detailed)``
    identifier words per aspect (``("Clamp", "ClampM5To3")``); class names are the paper
    name plus the words that tell the flow's configurations apart.
    """

    class_name: str  # paper name of the generated class
    variant: tuple[tuple[str, str], ...]  # (short, detailed) words, one pair per aspect
    config: str  # the static configuration, in words, for the docstring
    doc: str  # the class docstring (formulas)
    fields: tuple[Field, ...]
    args: dict[str, Any]  # constructor literals: ints and lists of ints
    params: dict[str, tuple[int, ...]]  # neutral local names -> shapes
    constant_jacobian: bool
    event_shape: tuple[int, ...]  # the input's event shape (vector layers keep it)
    forward: Callable = field(compare=False)
    inverse: Callable = field(compare=False)


class View:
    """Symbolic ``self.<attr>`` references used while tracing a layer."""

    def __getattr__(self, name: str) -> Value:
        return source(f"self.{name}")

    def kernel(self, j: int) -> Value:
        return source(f"self.kernels[{j}]")

    def bias(self, j: int) -> Value:
        return source(f"self.biases[{j}]")


# ------------------------------------------------------------------------ pieces
def _activate(h: Value, cond: S.Conditioner) -> Value:
    if cond.activation == "leaky_relu":
        return ops.leaky_relu(h, negative_slope=cond.negative_slope)
    if cond.activation == "gelu":  # exact GELU, x * Phi(x) (torch's default, TF's approximate=False)
        erf = ops.name(ops.erf(ops.name(h * 0.7071067811865476, "h_over_sqrt2")), "erf_h")
        return ops.name(0.5 * h, "half_h") * ops.name(1.0 + erf, "one_plus_erf_h")
    return getattr(ops, cond.activation)(h)


def _mlp(p: View, h: Value, cond: S.Conditioner) -> Value:
    n = len(cond.hidden) + 1
    for j in range(n):
        h = ops.name(ops.linear(h, p.kernel(j), p.bias(j)), "h" if j < n - 1 else "out")
        if j < n - 1:
            h = ops.name(_activate(h, cond), "h")
    return h


def _split(p: View, x: Value, mode: str, var: str = "x") -> tuple[Value, Value]:
    """``(passed, transformed)`` parts of ``x``, named ``{var}_a`` and ``{var}_b``."""
    if mode == "first":
        a, b = ops.slice_last(x, start=None, stop=p.split), ops.slice_last(x, start=p.split, stop=None)
    elif mode == "last":
        b, a = ops.slice_last(x, start=None, stop=p.split), ops.slice_last(x, start=p.split, stop=None)
    else:
        a, b = ops.take_last(x, p.pass_idx), ops.take_last(x, p.trans_idx)
    return ops.name(a, f"{var}_a"), ops.name(b, f"{var}_b")


def _merge(p: View, a: Value, b: Value, mode: str) -> Value:
    """Inverse of :func:`_split`."""
    if mode == "first":
        return ops.concat_last(a, b)
    if mode == "last":
        return ops.concat_last(b, a)
    return ops.take_last(ops.concat_last(a, b), p.merge_idx)


def _log_scale(raw: Value, scale: Any) -> tuple[Value, Value]:
    """``(log_scale, scale)`` of the raw conditioner output under a scale map."""
    if scale.kind == "sigmoid":  # Glow
        z = ops.name(raw + scale.offset, "s_offset")
        return ops.name(ops.log_sigmoid(z), "log_scale"), ops.name(ops.sigmoid(z), "scale")
    if scale.kind == "exp":
        log_scale = raw
    elif scale.kind == "clamp":  # Pyro's clamp_preserve_gradients
        log_scale = ops.clamp_st(raw, low=scale.low, high=scale.high)
    else:  # soft clamp c * tanh(s / c)
        tanh = ops.name(ops.tanh(ops.name(raw * (1.0 / scale.bound), "s_over_bound")), "tanh_s")
        log_scale = scale.bound * tanh
    log_scale = ops.name(log_scale, "log_scale")
    return log_scale, ops.name(ops.exp(log_scale), "scale")


def _mask_plan(layer: Any, dim: int) -> tuple[str, dict, tuple[Field, ...]]:
    passed, trans = S.mask_indices(layer.mask, dim)
    if passed == list(range(len(passed))):
        return "first", {"split": len(passed)}, (Field("int", "split"),)
    if passed == list(range(dim - len(passed), dim)):
        return "last", {"split": dim - len(passed)}, (Field("int", "split"),)
    order = passed + trans
    merge = sorted(range(dim), key=order.__getitem__)
    args = {"pass_idx": passed, "trans_idx": trans, "merge_idx": merge}
    return "gather", args, tuple(Field("index", n) for n in args)


def _mlp_params(sizes: list[int]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for j in range(len(sizes) - 1):
        out[f"conditioner.{j}.kernel"] = (sizes[j], sizes[j + 1])
        out[f"conditioner.{j}.bias"] = (sizes[j + 1],)
    return out


# ------------------------------------------------------------------ coupling layers
_ADDITIVE_DOC = """NICE additive coupling (Dinh et al. 2015, arXiv:1410.8516).

    shift = m(x_a)
    forward:  y_a = x_a,  y_b = x_b + shift,   log|det J| = 0
    inverse:  x_a = y_a,  x_b = y_b - shift,   log|det J^-1| = 0
    x_a: the entries the mask passes through; x_b: the others; m: the conditioner MLP.
    {config}"""

_AFFINE_DOC = """RealNVP affine coupling (Dinh et al. 2017, arXiv:1605.08803).

    [shift, s] = m(x_a);  scale = exp(log_scale),  log_scale = {formula}
    forward:  y_a = x_a,  y_b = x_b * scale + shift,   log|det J| = sum(log_scale)
    inverse:  x_a = y_a,  x_b = (y_b - shift) * exp(-log_scale),
              log|det J^-1| = -sum(log_scale)
    x_a: the entries the mask passes through; x_b: the others; m: the conditioner MLP.
    {config}"""

_SCALE_FORMULA = {
    "exp": "s",
    "clamp": "clamp(s, low, high)\n    (the clamp's gradient is passed straight through)",
    "soft_clamp": "bound * tanh(s / bound)",
    "sigmoid": "log(sigmoid(s + offset)) (Glow)",
}


def _configuration(text: str) -> str:
    """The docstring's "Configuration: ..." paragraph, wrapped to the code's width."""
    return textwrap.fill(f"Configuration: {text}.", 95, subsequent_indent="    ")


def _word(value: float) -> str:
    """A number as identifier text: -5.0 -> M5, 0.25 -> 0p25, 1e-05 -> 1em05."""
    text = repr(float(value)).removesuffix(".0").replace("e+", "e").replace("e-", "em")
    return text.replace("-", "M").replace(".", "p")


def _partition_words(mode: str, layer: Any) -> tuple[tuple[str, str], str]:
    if mode == "gather":
        return ("Gather", "Gather"), f"{layer.mask.kind} mask, entries gathered by index"
    part = "first" if mode == "first" else "last"
    word = "SplitFirst" if mode == "first" else "SplitLast"
    return (word, word), f"the {part} entries pass through (a split, no gather)"


def _conditioner_words(cond: S.Conditioner) -> tuple[list[tuple[str, str]], str]:
    act = "".join(w.capitalize() for w in cond.activation.split("_"))
    detail = act + (_word(cond.negative_slope) if cond.activation == "leaky_relu" else "")
    slope = f" (negative slope {cond.negative_slope!r})" if cond.activation == "leaky_relu" else ""
    depth = len(cond.hidden)
    text = f"conditioner with {depth} hidden layer{'s' * (depth != 1)}, {cond.activation}{slope}"
    return [(f"Depth{depth}", f"Depth{depth}"), (act, detail)], text


def _scale_words(scale: Any) -> tuple[tuple[str, str], str]:
    word = "".join(w.capitalize() for w in scale.kind.split("_"))
    if scale.kind == "clamp":
        return (word, f"Clamp{_word(scale.low)}To{_word(scale.high)}"), (
            f"scale map clamp to [{scale.low!r}, {scale.high!r}]")
    if scale.kind == "soft_clamp":
        return (word, f"SoftClamp{_word(scale.bound)}"), f"scale map soft_clamp, bound {scale.bound!r}"
    if scale.kind == "sigmoid":
        return (word, f"Sigmoid{_word(scale.offset)}"), f"scale map sigmoid, offset {scale.offset!r}"
    return (word, word), "scale map exp"


def plan_additive(layer: S.AdditiveCoupling, dim: int) -> Plan:
    mode, args, fields = _mask_plan(layer, dim)
    passed, trans = S.mask_indices(layer.mask, dim)
    cond = layer.conditioner
    sizes = [len(passed), *cond.hidden, len(trans)]
    part_word, part_text = _partition_words(mode, layer)
    cond_words, cond_text = _conditioner_words(cond)

    def forward(p: View, x: Value):
        x_a, x_b = _split(p, x, mode)
        shift = ops.name(_mlp(p, x_a, cond), "shift")
        y_b = ops.name(x_b + shift, "y_b")
        return _merge(p, x_a, y_b, mode), ops.batch_zeros(x)

    def inverse(p: View, y: Value):
        y_a, y_b = _split(p, y, mode, "y")
        shift = ops.name(_mlp(p, y_a, cond), "shift")
        x_b = ops.name(y_b - shift, "x_b")
        return _merge(p, y_a, x_b, mode), ops.batch_zeros(y)

    config = f"{part_text}; {cond_text}"
    return Plan(
        class_name="AdditiveCoupling",
        variant=(part_word, *cond_words),
        config=config,
        doc=_ADDITIVE_DOC.format(config=_configuration(config)),
        fields=(Field("mlp", "sizes"), *fields),
        args={"sizes": sizes, **args},
        params=_mlp_params(sizes),
        constant_jacobian=True,
        event_shape=(dim,),
        forward=forward,
        inverse=inverse,
    )


def plan_affine(layer: S.AffineCoupling, dim: int) -> Plan:
    mode, args, fields = _mask_plan(layer, dim)
    passed, trans = S.mask_indices(layer.mask, dim)
    cond, scale = layer.conditioner, layer.scale
    sizes = [len(passed), *cond.hidden, 2 * len(trans)]
    part_word, part_text = _partition_words(mode, layer)
    cond_words, cond_text = _conditioner_words(cond)
    scale_word, scale_text = _scale_words(scale)

    def conditioner(p: View, x_a: Value):
        out = _mlp(p, x_a, cond)
        shift = ops.name(ops.slice_last(out, start=None, stop=p.n_trans), "shift")
        raw = ops.name(ops.slice_last(out, start=p.n_trans, stop=None), "s")
        return (shift, *_log_scale(raw, scale))

    def forward(p: View, x: Value):
        x_a, x_b = _split(p, x, mode)
        shift, log_scale, scale_ = conditioner(p, x_a)
        y_b = ops.name(ops.name(x_b * scale_, "x_b_scaled") + shift, "y_b")
        return _merge(p, x_a, y_b, mode), ops.sum_last(log_scale)

    def inverse(p: View, y: Value):
        y_a, y_b = _split(p, y, mode, "y")
        shift, log_scale, _ = conditioner(p, y_a)
        unshifted = ops.name(y_b - shift, "y_b_unshifted")
        inv_scale = ops.name(ops.exp(ops.name(-log_scale, "neg_log_scale")), "inv_scale")
        x_b = ops.name(unshifted * inv_scale, "x_b")
        return _merge(p, y_a, x_b, mode), -ops.name(ops.sum_last(log_scale), "sum_log_scale")

    config = f"{part_text}; {cond_text}; {scale_text}"
    return Plan(
        class_name="AffineCoupling",
        variant=(part_word, *cond_words, scale_word),
        config=config,
        doc=_AFFINE_DOC.format(formula=_SCALE_FORMULA[scale.kind], config=_configuration(config)),
        fields=(Field("mlp", "sizes"), Field("int", "n_trans"), *fields),
        args={"sizes": sizes, "n_trans": len(trans), **args},
        params=_mlp_params(sizes),
        constant_jacobian=False,
        event_shape=(dim,),
        forward=forward,
        inverse=inverse,
    )


# -------------------------------------------------------------------- other layers
_SCALING_DOC = """NICE diagonal scaling layer (Dinh et al. 2015, arXiv:1410.8516, sec. 3.3).

    forward:  y = x * exp(log_scale),   log|det J| = sum(log_scale)
    inverse:  x = y * exp(-log_scale),  log|det J^-1| = -sum(log_scale)
    log_scale: a learned vector of the event size.
    Configuration: none besides the event shape."""

_PERMUTATION_DOC = """A fixed permutation of the event entries.

    forward:  y[..., i] = x[..., indices[i]],   log|det J| = 0
    inverse:  x = y[..., inverse_indices],      log|det J^-1| = 0
    Configuration: the indices, a constructor argument."""


def plan_scaling(layer: S.Scaling, dim: int) -> Plan:
    def forward(p: View, x: Value):
        scale = ops.name(ops.exp(p.log_scale), "scale")
        log_det = ops.batch_fill(ops.name(ops.sum_all(p.log_scale), "sum_log_scale"), x)
        return x * scale, log_det

    def inverse(p: View, y: Value):
        neg = ops.name(-p.log_scale, "neg_log_scale")
        inv_scale = ops.name(ops.exp(neg), "inv_scale")
        return y * inv_scale, ops.batch_fill(ops.name(ops.sum_all(neg), "sum_neg_log_scale"), y)

    return Plan(
        class_name="Scaling",
        variant=(),
        config="none",
        doc=_SCALING_DOC,
        fields=(Field("vector", "log_scale"),),
        args={},
        params={"log_scale": (dim,)},
        constant_jacobian=True,
        event_shape=(dim,),
        forward=forward,
        inverse=inverse,
    )


def plan_permutation(layer: S.Permutation, dim: int) -> Plan:
    indices = S.permutation_indices(layer, dim)
    inverse_indices = sorted(range(dim), key=indices.__getitem__)

    def forward(p: View, x: Value):
        return ops.take_last(x, p.indices), ops.batch_zeros(x)

    def inverse(p: View, y: Value):
        return ops.take_last(y, p.inverse_indices), ops.batch_zeros(y)

    return Plan(
        class_name="Permutation",
        variant=(),
        config="none",
        doc=_PERMUTATION_DOC,
        fields=(Field("index", "indices"), Field("index", "inverse_indices")),
        args={"indices": indices, "inverse_indices": inverse_indices},
        params={},
        constant_jacobian=True,
        event_shape=(dim,),
        forward=forward,
        inverse=inverse,
    )


#: Layer type (the spec's ``type`` field) -> its neutral definition.
REGISTRY: dict[str, Callable[[Any, int], Plan]] = {
    "additive_coupling": plan_additive,
    "affine_coupling": plan_affine,
    "scaling": plan_scaling,
    "permutation": plan_permutation,
}


def plan_flow(spec: S.FlowSpec) -> list[Plan]:
    """One :class:`Plan` per spec layer, in application order."""
    return [REGISTRY[layer.type](layer, spec.dim) for layer in spec.layers]


def param_shapes(spec: S.FlowSpec) -> dict[str, tuple[int, ...]]:
    """The neutral parameter layout: ``layers.{i}.{local name}`` -> shape, in order.

    Couplings: ``layers.{i}.conditioner.{j}.kernel`` ``(in, out)`` and ``.bias``
    ``(out,)``, ``j`` counting dense layers from the input; the last layer's output is
    ``[shift | raw log-scale]`` for affine couplings. Scaling: ``layers.{i}.log_scale``
    ``(D,)``. Permutations have none.
    """
    return {
        f"layers.{i}.{name}": shape
        for i, plan in enumerate(plan_flow(spec))
        for name, shape in plan.params.items()
    }
