"""Coupling layers (NICE, RealNVP, neural spline flows) and the elementwise layers of
every entry (:class:`flowbridge.ElementwiseAffine`, :class:`flowbridge.ElementwiseSpline`):
a partition, a conditioner and a map drawn from :data:`flowbridge.layers.maps.MAPS`."""

from __future__ import annotations

from .. import ir
from .. import spec as S
from ..ir import Value, ops
from .base import Plan, View, _configuration, _wrap, definition
from .maps import MAPS
from .parts import MLP, Partition, ResNet


@definition(S.AdditiveCoupling, S.AffineCoupling, S.SplineCoupling)
def plan_coupling(
    layer: S.AdditiveCoupling | S.AffineCoupling | S.SplineCoupling, shape: tuple[int, ...],
    context: int = 0,
) -> Plan:
    """A coupling from its three parts: the mask's partition, the MLP conditioner (which
    also reads the context when the flow has one) and the elementwise map from
    :data:`MAPS` (:class:`Shift` for NICE, :class:`Affine` for RealNVP, :class:`SplineMap`
    for a neural spline flow)."""
    part = Partition(layer.mask, shape)
    emap = MAPS[layer.type](part, layer)
    net = ResNet if isinstance(layer.conditioner, S.ResNetConditioner) else MLP
    cond = net(layer.conditioner, part.n_pass, emap.per_entry * part.n_trans, context)

    def conditioner(p: View, a: Value, c: Value | None) -> Value:
        """m(x_a) (with the context: m([x_a | c])), one method every direction calls;
        its parameter is x_a, which the inverse passes as y_a (the same entries)."""
        given = (a,) if c is None else (a, c)
        params = ("x_a",) if c is None else ("x_a", "context")
        return ir.call("conditioner", lambda *v: cond(p, *v), params, *given)

    passed = emap.passed_parts()  # the passed entries' own map (Pyro's identity=False)

    def forward(p: View, x: Value, c: Value | None = None):
        x_a, x_b = part.split(p, x, "x")
        y_b, log_det = emap.forward(p, conditioner(p, x_a, c), x_b, x)
        if passed is None:
            return part.merge(p, x_a, y_b), log_det
        y_a, log_det_a = emap.passed(p, x_a, x, False)
        return part.merge(p, y_a, y_b), ops.name(log_det + log_det_a, "log_det")

    def inverse(p: View, y: Value, c: Value | None = None):
        y_a, y_b = part.split(p, y, "y")
        x_a, log_det_a = (y_a, None) if passed is None else emap.passed(p, y_a, y, True)
        x_b, log_det = emap.inverse(p, conditioner(p, x_a, c), y_b, y)
        if log_det_a is not None:
            log_det = ops.name(log_det + log_det_a, "log_det")
        return part.merge(p, x_a, x_b), log_det

    config = "; ".join(t for t in (part.text, cond.text, emap.text) if t)
    return Plan(
        class_name=emap.class_name,
        variant=(part.words, *cond.words, *emap.words),
        config=config,
        doc=f"{emap.doc}\n    {_wrap(f'{part.legend}; {cond.legend}.')}\n    {_configuration(config)}",
        fields=(*cond.fields, *emap.fields, *part.fields, *(passed[0] if passed else ())),
        args={**cond.args, **emap.args, **part.args, **(passed[1] if passed else {})},
        params={**cond.params, **(passed[2] if passed else {})},
        constant_jacobian=emap.constant_jacobian,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        context=context,
        buffers=part.buffers,
        tolerances=emap.tolerances,
    )


class _Whole:
    """The partition of an elementwise layer: every entry transformed, none passed."""

    axis, masked = -1, False

    def __init__(self, dim: int):
        self.n_pass, self.n_trans = 0, dim

    def restrict(self, p: View, value: Value, name: str) -> Value:
        return value


@definition(S.ElementwiseAffine, S.ElementwiseSpline)
def plan_elementwise(layer: S.ElementwiseAffine | S.ElementwiseSpline, shape: tuple[int, ...],
                     context: int = 0) -> Plan:  # fmt: skip
    """An elementwise map of every entry, drawn from :data:`MAPS`. With a context, its raw
    parameters are ``m(context)`` (the MLP reads the context alone, its last layer
    starting at zero); without one, they are learned tensors starting at zero (an affine
    map's ``shift`` and ``s``, test draws uniform in +-0.3; a spline's ``widths``,
    ``heights``, ``derivatives``, test draws in +-1). Either way the map starts as the
    identity (under the exp, clamp and soft-clamp scale maps for an affine one)."""
    (dim,) = shape
    emap = MAPS[layer.type](_Whole(dim), layer)
    if context:
        cond = MLP(layer.conditioner, context, emap.per_entry * dim)

        def conditioner(p: View, like: Value, c: Value) -> Value:
            wide = ops.name(ops.broadcast_batch(c, like, event_ndims=1), "context_b")
            return ir.call("conditioner", lambda v: cond(p, v), ("context",), wide)

        def forward(p: View, x: Value, c: Value):
            return emap.forward(p, conditioner(p, x, c), x, x)

        def inverse(p: View, y: Value, c: Value):
            return emap.inverse(p, conditioner(p, y, c), y, y)

        legend = "m: the conditioner MLP, reading the context"
        parts = dict(fields=(*cond.fields, *emap.fields), args={**cond.args, **emap.args},
                     params=cond.params, variant=("Conditional", *cond.words, *emap.words))  # fmt: skip
        config = f"{cond.text}; {emap.text}"
    else:
        forward, inverse = emap.forward_learned, emap.inverse_learned
        fields, args, params = emap.learned(dim)
        legend = "the flow has no context, so no conditioner: the map's raw parameters are the weights"
        parts = dict(fields=fields, args=args, params=params, variant=emap.words)
        config = emap.text
    doc = emap.elementwise_doc(bool(context))
    return Plan(
        class_name=emap.elementwise_name,
        config=config,
        doc=f"{doc}\n    {_wrap(legend + '.')}\n    {_configuration(config)}",
        constant_jacobian=not context and emap.learned_constant_jacobian,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        context=context,
        tolerances=emap.tolerances,
        **parts,
    )
