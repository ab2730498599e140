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
    """A spec layer resolved against the event size."""

    class_name: str  # paper name of the generated class
    key: tuple  # static configuration: layers with equal keys share one class
    doc: str  # the class docstring (formulas)
    fields: tuple[Field, ...]
    args: dict[str, Any]  # constructor literals: ints and lists of ints
    params: dict[str, tuple[int, ...]]  # neutral local names -> shapes
    constant_jacobian: bool
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
        return 0.5 * h * (1.0 + ops.erf(h * 0.7071067811865476))
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
        z = raw + scale.offset
        return ops.name(ops.log_sigmoid(z), "log_scale"), ops.name(ops.sigmoid(z), "scale")
    if scale.kind == "exp":
        log_scale = raw
    elif scale.kind == "clamp":  # Pyro's clamp_preserve_gradients
        log_scale = ops.clamp_st(raw, low=scale.low, high=scale.high)
    else:  # soft clamp c * tanh(s / c)
        log_scale = scale.bound * ops.tanh(raw * (1.0 / scale.bound))
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

    forward:  y_a = x_a,  y_b = x_b + m(x_a),   log|det J| = 0
    inverse:  x_a = y_a,  x_b = y_b - m(y_a),   log|det J^-1| = 0
    x_a: the entries the mask passes through; m: the conditioner MLP."""

_AFFINE_DOC = """RealNVP affine coupling (Dinh et al. 2017, arXiv:1605.08803).

    [t, s] = m(x_a);  l = log_scale(s);  y_a = x_a,  y_b = x_b * exp(l) + t
    inverse:  x_b = (y_b - t) * exp(-l)
    log|det J| = sum(l),  log|det J^-1| = -sum(l)
    Scale map ({scale}): {formula}."""

_SCALE_FORMULA = {
    "exp": "l = s",
    "clamp": "l = clamp(s, low, high), gradient passed straight through",
    "soft_clamp": "l = c * tanh(s / c)",
    "sigmoid": "l = log(sigmoid(s + offset)) (Glow)",
}


def plan_additive(layer: S.AdditiveCoupling, dim: int) -> Plan:
    mode, args, fields = _mask_plan(layer, dim)
    passed, trans = S.mask_indices(layer.mask, dim)
    cond = layer.conditioner
    sizes = [len(passed), *cond.hidden, len(trans)]

    def forward(p: View, x: Value):
        x_a, x_b = _split(p, x, mode)
        y_b = ops.name(x_b + _mlp(p, x_a, cond), "y_b")
        return _merge(p, x_a, y_b, mode), ops.batch_zeros(x)

    def inverse(p: View, y: Value):
        y_a, y_b = _split(p, y, mode, "y")
        x_b = ops.name(y_b - _mlp(p, y_a, cond), "x_b")
        return _merge(p, y_a, x_b, mode), ops.batch_zeros(y)

    return Plan(
        class_name="AdditiveCoupling",
        key=("additive_coupling", mode, len(cond.hidden), cond.activation, cond.negative_slope),
        doc=_ADDITIVE_DOC,
        fields=(Field("mlp", "sizes"), *fields),
        args={"sizes": sizes, **args},
        params=_mlp_params(sizes),
        constant_jacobian=True,
        forward=forward,
        inverse=inverse,
    )


def plan_affine(layer: S.AffineCoupling, dim: int) -> Plan:
    mode, args, fields = _mask_plan(layer, dim)
    passed, trans = S.mask_indices(layer.mask, dim)
    cond, scale = layer.conditioner, layer.scale
    sizes = [len(passed), *cond.hidden, 2 * len(trans)]

    def conditioner(p: View, x_a: Value):
        out = _mlp(p, x_a, cond)
        shift = ops.name(ops.slice_last(out, start=None, stop=p.n_trans), "shift")
        raw = ops.name(ops.slice_last(out, start=p.n_trans, stop=None), "s")
        return (shift, *_log_scale(raw, scale))

    def forward(p: View, x: Value):
        x_a, x_b = _split(p, x, mode)
        shift, log_scale, scale_ = conditioner(p, x_a)
        y_b = ops.name(x_b * scale_ + shift, "y_b")
        return _merge(p, x_a, y_b, mode), ops.sum_last(log_scale)

    def inverse(p: View, y: Value):
        y_a, y_b = _split(p, y, mode, "y")
        shift, log_scale, _ = conditioner(p, y_a)
        x_b = ops.name((y_b - shift) * ops.exp(-log_scale), "x_b")
        return _merge(p, y_a, x_b, mode), -ops.sum_last(log_scale)

    scale_key = tuple(sorted(scale.model_dump().items()))
    return Plan(
        class_name="AffineCoupling",
        key=("affine_coupling", mode, len(cond.hidden), cond.activation, cond.negative_slope,
             scale_key),  # fmt: skip
        doc=_AFFINE_DOC.format(scale=scale.kind, formula=_SCALE_FORMULA[scale.kind]),
        fields=(Field("mlp", "sizes"), Field("int", "n_trans"), *fields),
        args={"sizes": sizes, "n_trans": len(trans), **args},
        params=_mlp_params(sizes),
        constant_jacobian=False,
        forward=forward,
        inverse=inverse,
    )


# -------------------------------------------------------------------- other layers
_SCALING_DOC = """NICE diagonal scaling layer (Dinh et al. 2015, arXiv:1410.8516, sec. 3.3).

    forward:  y = x * exp(s),   log|det J| = sum(s)
    inverse:  x = y * exp(-s),  log|det J^-1| = -sum(s)
    s: a learned vector of the event size (neutral name ``log_scale``)."""

_PERMUTATION_DOC = """A fixed permutation of the event entries.

    forward:  y[..., i] = x[..., indices[i]],   log|det J| = 0
    inverse:  x = y[..., inverse_indices],      log|det J^-1| = 0"""


def plan_scaling(layer: S.Scaling, dim: int) -> Plan:
    def forward(p: View, x: Value):
        return x * ops.exp(p.log_scale), ops.batch_fill(ops.sum_all(p.log_scale), x)

    def inverse(p: View, y: Value):
        return y * ops.exp(-p.log_scale), ops.batch_fill(-ops.sum_all(p.log_scale), y)

    return Plan(
        class_name="Scaling",
        key=("scaling",),
        doc=_SCALING_DOC,
        fields=(Field("vector", "log_scale"),),
        args={"dim": dim},
        params={"log_scale": (dim,)},
        constant_jacobian=True,
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
        key=("permutation",),
        doc=_PERMUTATION_DOC,
        fields=(Field("index", "indices"), Field("index", "inverse_indices")),
        args={"indices": indices, "inverse_indices": inverse_indices},
        params={},
        constant_jacobian=True,
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
