"""Layers that move entries: a fixed permutation, RealNVP's squeeze and multi-scale
factor-out, and the wrapping of a layer planned on the active channels of an image
(:func:`on_active_channels`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .. import spec as S
from ..ir import Value, ops
from .base import Field, Plan, View, _wrap, definition

_PERMUTATION_DOC = """A fixed permutation of the event entries.

    forward:  y[..., i] = x[..., indices[i]],   log|det J| = 0
    inverse:  x = y[..., inverse_indices],      log|det J^-1| = 0
    Configuration: the indices, a constructor argument."""


@definition(S.Permutation)
def plan_permutation(layer: S.Permutation, shape: tuple[int, ...], context: int = 0) -> Plan:
    if len(shape) != 1:
        raise ValueError(f"permutations take vector events (D,), got {shape}")
    indices = S.permutation_indices(layer, shape[0])
    inverse_indices = sorted(range(shape[0]), key=indices.__getitem__)

    def forward(p: View, x: Value):
        return ops.take(x, p.indices, axis=-1), ops.batch_zeros(x, event_ndims=1)

    def inverse(p: View, y: Value):
        return ops.take(y, p.inverse_indices, axis=-1), ops.batch_zeros(y, event_ndims=1)

    return Plan(
        class_name="Permutation",
        variant=(),
        config="none",
        doc=_PERMUTATION_DOC,
        fields=(Field("index", "indices"), Field("index", "inverse_indices")),
        args={"indices": indices, "inverse_indices": inverse_indices},
        params={},
        constant_jacobian=True,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        identity_at_arange=True,
    )


_SQUEEZE_DOC = """RealNVP's squeeze: 2x2 space-to-depth (Dinh et al. 2017, sec. 3.6).

    forward:  (C, H, W) -> (4C, H/2, W/2),  y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j],
              log|det J| = 0
    inverse:  the same entries moved back,  log|det J^-1| = 0
    Configuration: none besides the event shape."""


@definition(S.Squeeze)
def plan_squeeze(layer: S.Squeeze, shape: tuple[int, ...], context: int = 0) -> Plan:
    """A squeeze: the plan whose output shape differs from its input shape."""

    def forward(p: View, x: Value):
        return ops.squeeze2x2(x), ops.batch_zeros(x, event_ndims=3)

    def inverse(p: View, y: Value):
        return ops.unsqueeze2x2(y), ops.batch_zeros(y, event_ndims=3)

    return Plan(
        class_name="Squeeze",
        variant=(),
        config="none",
        doc=_SQUEEZE_DOC,
        fields=(),
        args={},
        params={},
        constant_jacobian=True,
        event_shape=shape,
        output_shape=layer.output_shape(shape),  # (4C, H/2, W/2), as the spec says
        forward=forward,
        inverse=inverse,
    )


_FACTOR_OUT_DOC = """RealNVP's multi-scale factor-out (Dinh et al. 2017, sec. 3.6).

    forward:  y = x,  log|det J| = 0;  inverse:  x = y,  log|det J^-1| = 0
    Of the channels still active, the first `kept` stay active and the other `factored`
    leave the flow: every later layer but a squeeze acts on the first `kept` channels and
    passes the others to the output unchanged.
    Configuration: kept and factored, constructor arguments."""


@definition(S.FactorOut)
def plan_factor_out(layer: S.FactorOut, shape: tuple[int, ...], context: int = 0) -> Plan:
    """The factor-out marks a scale's end; the layers after it are planned on the
    channels it keeps (:func:`plan_flow`). ``shape`` is the active channels'."""
    active = shape[0]

    def forward(p: View, x: Value):
        return x, ops.batch_zeros(x, event_ndims=3)

    def inverse(p: View, y: Value):
        return y, ops.batch_zeros(y, event_ndims=3)

    return Plan(
        class_name="FactorOut",
        variant=(),
        config="none",
        doc=_FACTOR_OUT_DOC,
        fields=(Field("int", "kept"), Field("int", "factored")),
        args={"kept": active // 2, "factored": active - active // 2},
        params={},
        constant_jacobian=True,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        whole_tensor=True,
    )


def on_active_channels(plan: Plan, shape: tuple[int, ...]) -> Plan:
    """``plan`` (planned on the first ``A`` channels) on events of ``shape`` (``C > A``
    channels): the channels factored out before it pass through unchanged."""
    active, channels = plan.event_shape[0], shape[0]

    def wrap(fn: Callable | None, var: str) -> Callable | None:
        if fn is None:
            return None

        def on_active(p: View, v: Value, *context: Value):
            head = ops.name(ops.slice(v, axis=-3, start=None, stop=active), f"{var}_active")
            rest = ops.name(ops.slice(v, axis=-3, start=active, stop=None), f"{var}_factored")
            out, log_det, *effects = fn(p, head, *context)
            return ops.concat(out, rest, axis=-3), log_det, *effects

        return on_active

    note = (f"Acts on the first {active} of the {channels} channels; the other {channels - active} "
            "were factored out before it and pass through unchanged.")  # fmt: skip
    return dataclasses.replace(
        plan,
        args={**plan.args, "active_shape": plan.event_shape},  # a "vector" field's shape
        variant=(*plan.variant, (f"Active{active}", f"Active{active}")),
        doc=f"{plan.doc}\n    {_wrap(note)}",
        event_shape=shape,
        output_shape=shape,
        forward=wrap(plan.forward, "x"),
        inverse=wrap(plan.inverse, "y"),
        training_forward=wrap(plan.training_forward, "x"),
        data_init=None if plan.data_init is None else (
            lambda h, eps, init=plan.data_init: init(h[:, :active], eps)),
    )
