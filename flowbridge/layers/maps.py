"""The elementwise maps a coupling (and an elementwise layer) applies given its
conditioner's output: NICE's :class:`Shift`, RealNVP's :class:`Affine` and the neural
spline flow's :class:`SplineMap`, registered by layer type in :data:`MAPS`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import splines
from ..ir import Value, ops
from .base import ZEROS, Field, Init, Param, View, _word


class Shift:
    """NICE's additive map: ``y_b = x_b + shift``, log-det 0 (one conditioner output
    per transformed entry)."""

    class_name, per_entry, constant_jacobian = "AdditiveCoupling", 1, True
    tolerances: dict[str, float] = {}
    fields: tuple[Field, ...] = ()
    words: tuple[tuple[str, str], ...] = ()
    text = ""
    doc = """NICE additive coupling (Dinh et al. 2015, arXiv:1410.8516).

    shift = m(x_a)
    forward:  y_a = x_a,  y_b = x_b + shift,   log|det J| = 0
    inverse:  x_a = y_a,  x_b = y_b - shift,   log|det J^-1| = 0"""

    args: dict[str, Any] = {}

    def __init__(self, part: Any):
        self.part = part

    @staticmethod
    def entries(n: int) -> list[int]:
        """The entry each of the conditioner's ``n`` outputs belongs to."""
        return list(range(n))

    @staticmethod
    def passed_parts() -> None:  # the passed entries pass unchanged
        return None

    def forward(self, p: View, out: Value, x_b: Value, x: Value):
        y_b = ops.name(x_b + self.part.restrict(p, ops.name(out, "shift"), "shift"), "y_b")
        return y_b, ops.batch_zeros(x, event_ndims=len(x.shape))

    def inverse(self, p: View, out: Value, y_b: Value, y: Value):
        x_b = ops.name(y_b - self.part.restrict(p, ops.name(out, "shift"), "shift"), "x_b")
        return x_b, ops.batch_zeros(y, event_ndims=len(y.shape))


_SCALE_FORMULA = {
    "exp": "s",
    "clamp": "clamp(s, low, high)\n    (the clamp's gradient is passed straight through)",
    "soft_clamp": "bound * tanh(s / bound)",
    "sigmoid": "log(sigmoid(s + offset)) (Glow)",
    "softplus": "log(softplus(s) + eps) (nflows)",
}


_ELEMENTWISE_AFFINE_DOC = """Elementwise affine map of every entry (a conditional Gaussian on a
    one-dimensional event; flowbridge's layer where no coupling can split the entries).

    {given}
    scale = exp(log_scale),  log_scale = {formula}
    forward:  y = x * scale + shift,   log|det J| = sum(log_scale)
    inverse:  x = (y - shift) * exp(-log_scale),  log|det J^-1| = -sum(log_scale)"""

_ELEMENTWISE_SPLINE_DOC = """Elementwise monotonic rational spline of every entry (Pyro's Spline and
    ConditionalSpline).

    {given}
    forward:  y = spline(x),  log|det J| = sum(log spline'(x))
    inverse:  x = spline^-1(y),  log|det J^-1| = -sum(log spline'(x))
    {spline}"""


class Affine:
    """RealNVP's affine map: ``y_b = x_b * scale + shift`` with ``scale`` from the raw
    output ``s`` under the spec's scale map; log-det ``sum(log_scale)`` (two conditioner
    outputs per transformed entry, ordered ``[shift | s]``)."""

    class_name, per_entry, constant_jacobian = "AffineCoupling", 2, False
    tolerances: dict[str, float] = {}
    # as the map of every entry (an elementwise layer): its class, and with learned shift
    # and s (no context) a log-det that does not depend on the input
    elementwise_name, learned_constant_jacobian = "ElementwiseAffine", True

    def elementwise_doc(self, conditional: bool) -> str:
        """The docstring of the elementwise layer of this map."""
        given = ("[shift, s] = m(context): the conditioner reads the context alone"
                 if conditional else "shift, s: learned vectors of the event size")  # fmt: skip
        return _ELEMENTWISE_AFFINE_DOC.format(given=given, formula=_SCALE_FORMULA[self.scale.kind])

    fields = (Field("int", "n_trans"),)
    doc = """RealNVP affine coupling (Dinh et al. 2017, arXiv:1605.08803).

    [shift, s] = m(x_a);  scale = exp(log_scale),  log_scale = {formula}
    forward:  y_a = x_a,  y_b = x_b * scale + shift,   log|det J| = sum(log_scale)
    inverse:  x_a = y_a,  x_b = (y_b - shift) * exp(-log_scale),
              log|det J^-1| = -sum(log_scale)"""

    # as the map of an autoregressive layer: its class
    autoregressive_name = "AffineAutoregressive"

    def __init__(self, part: Any, scale: Any):
        self.scale, self.part = scale, part
        self.args = {"n_trans": part.n_trans}
        self.formula = _SCALE_FORMULA[scale.kind]
        self.doc = Affine.doc.format(formula=self.formula)
        word = "".join(w.capitalize() for w in scale.kind.split("_"))
        if scale.kind == "clamp":
            detail = f"Clamp{_word(scale.low)}To{_word(scale.high)}"
            self.text = f"scale map clamp to [{scale.low!r}, {scale.high!r}]"
        elif scale.kind == "soft_clamp":
            detail, self.text = f"SoftClamp{_word(scale.bound)}", (
                f"scale map soft_clamp, bound {scale.bound!r}")
        elif scale.kind == "sigmoid":
            detail, self.text = f"Sigmoid{_word(scale.offset)}", (
                f"scale map sigmoid, offset {scale.offset!r}")
        elif scale.kind == "softplus":
            detail, self.text = f"Softplus{_word(scale.eps)}", (
                f"scale map softplus, eps {scale.eps!r}")
        else:
            detail, self.text = word, "scale map exp"
        self.words = ((word, detail),)

    @staticmethod
    def passed_parts() -> None:  # the passed entries pass unchanged
        return None

    @staticmethod
    def entries(n: int) -> list[int]:
        """The entry each of the conditioner's ``2n`` outputs belongs to: ``[shift | s]``."""
        return list(range(n)) * 2

    def _unpack(self, p: View, out: Value) -> tuple[Value, Value, Value]:
        """``(shift, log_scale, scale)`` from the conditioner's output (stacked along the
        partition's axis: the last for vectors, channels for images); a masked
        partition's are zero at the passed entries, so its scale is 1 there."""
        axis, part = self.part.axis, self.part
        shift = ops.name(ops.slice(out, axis=axis, start=None, stop=p.n_trans), "shift")
        raw = ops.name(ops.slice(out, axis=axis, start=p.n_trans, stop=None), "s")
        log_scale, scale = self._log_scale(raw)
        if not part.masked:
            return shift, log_scale, scale
        shift = part.restrict(p, ops.name(shift, "shift_all"), "shift")
        log_scale = part.restrict(p, ops.name(log_scale, "log_scale_all"), "log_scale")
        return shift, log_scale, ops.name(ops.exp(log_scale), "scale")

    def _log_scale(self, raw: Value) -> tuple[Value, Value]:
        """``(log_scale, scale)`` of the raw output under the scale map."""
        scale = self.scale
        if scale.kind == "sigmoid":  # Glow
            z = ops.name(raw + scale.offset, "s_offset")
            return ops.name(ops.log_sigmoid(z), "log_scale"), ops.name(ops.sigmoid(z), "scale")
        if scale.kind == "softplus":  # nflows: the scale itself is softplus(s) + eps
            positive = ops.name(ops.softplus(raw) + scale.eps, "scale")
            return ops.name(ops.log(positive), "log_scale"), positive
        if scale.kind == "exp":
            log_scale = raw
        elif scale.kind == "clamp":  # Pyro's clamp_preserve_gradients
            log_scale = ops.clamp_st(raw, low=scale.low, high=scale.high)
        else:  # soft clamp c * tanh(s / c)
            tanh = ops.name(ops.tanh(ops.name(raw * (1.0 / scale.bound), "s_over_bound")), "tanh_s")
            log_scale = scale.bound * tanh
        log_scale = ops.name(log_scale, "log_scale")
        return log_scale, ops.name(ops.exp(log_scale), "scale")

    # an unconditional elementwise affine map: shift and s are learned vectors
    def learned(self, dim: int) -> tuple[tuple[Field, ...], dict[str, Any], dict[str, Param]]:
        """``(fields, args, params)`` of the learned ``shift`` and ``s`` of ``dim`` entries."""
        learned = Param((dim,), ZEROS, Init.uniform(0.3))
        return (Field("vector", "shift"), Field("vector", "s")), {}, {"shift": learned,
                                                                      "s": learned}  # fmt: skip

    def forward_learned(self, p: View, x: Value):
        log_scale, scale = self._log_scale(p.s)
        total = ops.name(ops.sum_all(log_scale), "sum_log_scale")
        y = ops.name(ops.name(x * scale, "x_scaled") + p.shift, "y")
        return y, ops.batch_fill(total, x, event_ndims=1)

    def inverse_learned(self, p: View, y: Value):
        log_scale, _ = self._log_scale(p.s)
        inv_scale = ops.name(ops.exp(ops.name(-log_scale, "neg_log_scale")), "inv_scale")
        total = ops.name(ops.sum_all(log_scale), "sum_log_scale")
        x = ops.name(ops.name(y - p.shift, "y_unshifted") * inv_scale, "x")
        return x, ops.batch_fill(ops.name(-total, "neg_sum_log_scale"), y, event_ndims=1)

    def forward(self, p: View, out: Value, x_b: Value, x: Value):
        shift, log_scale, scale = self._unpack(p, out)
        y_b = ops.name(ops.name(x_b * scale, "x_b_scaled") + shift, "y_b")
        return y_b, ops.sum_event(log_scale, event_ndims=len(x.shape))

    def inverse(self, p: View, out: Value, y_b: Value, y: Value):
        shift, log_scale, _ = self._unpack(p, out)
        unshifted = ops.name(y_b - shift, "y_b_unshifted")
        inv_scale = ops.name(ops.exp(ops.name(-log_scale, "neg_log_scale")), "inv_scale")
        x_b = ops.name(unshifted * inv_scale, "x_b")
        log_det = ops.name(ops.sum_event(log_scale, event_ndims=len(y.shape)), "sum_log_scale")
        return x_b, -log_det


class SplineMap:
    """The neural spline map: ``y_b = spline(x_b)`` per transformed entry, its raw
    parameters from the conditioner (``3K - 1`` per entry, parameter-major: see
    :class:`flowbridge.RationalQuadraticSpline`); log-det the sum of the spline's
    log-derivatives. Its math is :func:`flowbridge.splines.spline`."""

    class_name, constant_jacobian = "SplineCoupling", False
    tolerances = {"float32": splines.FLOAT32_TOLERANCE}
    elementwise_name, learned_constant_jacobian = "ElementwiseSpline", False
    autoregressive_name = "SplineAutoregressive"

    def elementwise_doc(self, conditional: bool) -> str:
        """The docstring of the elementwise layer of this map."""
        given = ("raw = m(context): the conditioner reads the context alone" if conditional
                 else "widths, heights (D, K), derivatives (D, K - 1) (and lambdas (D, K)): "
                 "the learned raw parameters")  # fmt: skip
        return _ELEMENTWISE_SPLINE_DOC.format(given=given, spline=self.formula)
    fields: tuple[Field, ...] = ()
    args: dict[str, Any] = {}

    def __init__(self, part: Any, spline: Any, transform_passed: bool = False):
        self.part, self.spline, self.transform_passed = part, spline, transform_passed
        self.per_entry = spline.per_entry
        linear = spline.kind == "rational_linear"
        self.formula = splines.LINEAR_DOC if linear else splines.DOC
        self.doc = f"""Neural spline coupling (Durkan et al. 2019, arXiv:1906.04032).

    raw = m(x_a);  y_a = x_a,  y_b = spline(x_b; raw),  log|det J| = sum(log spline'(x_b))
    inverse:  x_b = spline^-1(y_b; raw),  log|det J^-1| = -sum(log spline'(x_b))
    {self.formula}"""
        order = f"Linear{_word(spline.min_lambda)}" if linear else ""
        detail = (f"{order}Bins{spline.bins}B{_word(spline.bound)}W{_word(spline.min_bin_width)}"
                  f"H{_word(spline.min_bin_height)}D{_word(spline.min_derivative)}"
                  f"Edge{spline.edge_derivative.capitalize()}Eps{_word(spline.eps)}")  # fmt: skip
        self.words = ((f"{'Linear' if linear else ''}Bins{spline.bins}", detail),)
        edge = "1" if spline.edge_derivative == "one" else "1 - min_derivative (Pyro's)"
        kind = f"rational-linear (min_lambda {spline.min_lambda!r}), " if linear else ""
        self.text = (f"{kind}{spline.bins} bins on [-{spline.bound!r}, {spline.bound!r}], minimum "
                     f"bin width {spline.min_bin_width!r}, height {spline.min_bin_height!r}, "
                     f"derivative {spline.min_derivative!r}, edge derivative {edge}, bin "
                     f"search eps {spline.eps!r}; "
                     + splines.layout(part.n_trans, spline))  # fmt: skip

    def entries(self, n: int) -> list[int]:
        """The entry each of the conditioner's outputs belongs to: per block of the layout,
        each entry's ``m`` raw parameters in a row (entry-major)."""
        sizes = [shape[-1] for shape in splines.raw_shapes(1, self.spline).values()]
        return [i for m in sizes for i in range(n) for _ in range(m)]

    def _apply(self, raw: tuple[Value, ...], v: Value, whole: Value, inverse: bool,
               p: View | None = None):  # fmt: skip
        """The spline of ``v`` and the log-det over ``whole``'s event; a masked (checkerboard)
        partition's passed entries kept as they are (``v + (1 - b) * (spline(v) - v)``,
        their log-derivatives zeroed)."""
        out, log_deriv = splines.spline(v, raw, self.spline, inverse)
        if p is not None and self.part.masked:
            out = ops.name(v + self.part.restrict(p, ops.name(out - v, "spline_step"),
                                                  "spline_step_b"), "x_b" if inverse else "y_b")
            log_deriv = self.part.restrict(p, log_deriv, "log_derivative_b")
        log_det = ops.name(ops.sum_event(log_deriv, event_ndims=len(whole.shape)), "log_det_b")
        return out, log_det

    def _raw(self, out: Value) -> tuple[Value, ...]:
        return splines.unpack(out, self.part.n_trans, self.spline, self.part.axis)

    def forward(self, p: View, out: Value, x_b: Value, x: Value):
        return self._apply(self._raw(out), x_b, x, False, p)

    def inverse(self, p: View, out: Value, y_b: Value, y: Value):
        return self._apply(self._raw(out), y_b, y, True, p)

    # an unconditional elementwise spline: the raw parameters are learned tensors
    def learned(self, dim: int, prefix: str = "") -> tuple[tuple[Field, ...], dict[str, Any],
                                                          dict[str, Param]]:  # fmt: skip
        """``(fields, args, params)`` of the learned raw parameters of ``dim`` entries, each
        name starting with ``prefix``."""
        shapes = splines.raw_shapes(dim, self.spline)
        k = self.spline.bins
        args = {f"{prefix}bins_shape": [dim, k], f"{prefix}inner_shape": [dim, k - 1]}
        fields = tuple(Field("vector", f"{prefix}{name}", f"{prefix}inner_shape"
                             if name == "derivatives" else f"{prefix}bins_shape")
                       for name in shapes)  # fmt: skip
        params = {f"{prefix}{name}": Param(shape, ZEROS, Init.uniform(1.0))
                  for name, shape in shapes.items()}  # fmt: skip
        return fields, args, params

    def _learned_raw(self, p: View, prefix: str = "") -> tuple[Value, ...]:
        names = splines.raw_shapes(1, self.spline)
        return tuple(getattr(p, f"{prefix}{name}") for name in names)

    def forward_learned(self, p: View, x: Value):
        return self._apply(self._learned_raw(p), x, x, False)

    def inverse_learned(self, p: View, y: Value):
        return self._apply(self._learned_raw(p), y, y, True)

    # Pyro's identity=False: the passed entries through a learned spline of their own
    def passed_parts(self) -> tuple[tuple[Field, ...], dict[str, Any], dict[str, Param]] | None:
        """``(fields, args, params)`` of the passed entries' own spline, or ``None``."""
        return self.learned(self.part.n_pass, "a_") if self.transform_passed else None

    def passed(self, p: View, v: Value, whole: Value, inverse: bool):
        """The passed entries' own spline (``inverse``: its inverse) and its log-det."""
        out, log_deriv = splines.spline(v, self._learned_raw(p, "a_"), self.spline,
                                        inverse, "x_a_spline" if inverse else "y_a")  # fmt: skip
        return out, ops.name(ops.sum_event(log_deriv, event_ndims=len(whole.shape)), "log_det_a")


def _shift_map(part: Any, layer: Any) -> Shift:
    return Shift(part)


def _affine_map(part: Any, layer: Any) -> Affine:
    return Affine(part, layer.scale)


def _spline_map(part: Any, layer: Any) -> SplineMap:
    return SplineMap(part, layer.spline, getattr(layer, "passed_spline", False))


#: The elementwise maps, by the layer type that applies them: tag -> ``make(partition,
#: layer)``. A coupling (the partition its mask's), an elementwise layer (every entry)
#: and, later, an autoregressive layer all draw their map from here: a new map is one
#: class (``forward(p, raw, v, whole)``, ``inverse``, ``per_entry`` raw outputs per entry)
#: and its entries.
MAPS: dict[str, Callable[[Any, Any], Any]] = {
    "additive_coupling": _shift_map,
    "affine_coupling": _affine_map,
    "spline_coupling": _spline_map,
    "elementwise_affine": _affine_map,
    "elementwise_spline": _spline_map,
    "affine_autoregressive": _affine_map,
    "spline_autoregressive": _spline_map,
}
