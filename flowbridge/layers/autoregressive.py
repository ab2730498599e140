"""Autoregressive layers (MAF and IAF, affine or spline): a :class:`MADE` conditioner and
an elementwise map drawn from :data:`flowbridge.layers.maps.MAPS`, the ``D``-pass
direction one loop (:func:`flowbridge.ir.loop`)."""

from __future__ import annotations

from .. import ir
from .. import spec as S
from ..ir import Value, ops
from .base import Field, Plan, View, _configuration, _wrap, definition
from .coupling import _Whole
from .maps import MAPS
from .parts import _activate, activation_words, stack_params


class MADE:
    """The masked conditioner ``m`` of an autoregressive layer (see
    :class:`flowbridge.MADE`): dense layers ``D (+ context) -> *hidden -> n_out``, layer
    ``j``'s kernel multiplied by its mask, the masks built once from the degrees (constant
    buffers ``degrees_0`` .. ``degrees_{L+1}``: the inputs', each hidden layer's and the
    outputs'). ``entries[k]`` is the event entry output unit ``k`` belongs to. Kernels
    ``(in, out)`` start uniform in ``+-1/sqrt(fan_in)``, biases at zero, the last layer at
    zero (the identity); parameters ``conditioner.{j}.kernel`` and ``.bias``, as an MLP's."""

    def __init__(self, cond: S.MADE, dim: int, entries: list[int], context: int = 0):
        self.cond, self.context = cond, context
        inputs = cond.input_degrees(dim)
        self.degrees = [inputs + [0] * context, *cond.hidden_degrees(dim, context),
                        [inputs[e] for e in entries]]  # fmt: skip
        self.sizes = [dim + context, *cond.hidden, len(entries)]
        names = [f"degrees_{j}" for j in range(len(self.degrees))]
        self.fields = (Field("dense", "sizes"), *(Field("constant", n) for n in names))
        self.args = {"sizes": self.sizes,
                     **{n: [float(d) for d in deg] for n, deg in zip(names, self.degrees, strict=True)}}  # fmt: skip
        self.buffers = {n: (len(deg),) for n, deg in zip(names, self.degrees, strict=True)}
        self.params = stack_params(self.sizes)
        act, words = activation_words(cond)
        depth = len(cond.hidden)
        reverse = cond.order is not None and list(cond.order) == list(range(dim - 1, -1, -1))
        ordered = "" if cond.order is None else "Reversed" if reverse else "Ordered"
        self.words = [(f"Depth{depth}", f"Depth{depth}"), words, (ordered, ordered)]
        order = "left to right" if cond.order is None else f"order {list(cond.order)}"
        self.text = (f"MADE with {depth} hidden layer{'s' * (depth != 1)}, {act}, "
                     f"{order}, degrees {cond.degrees if isinstance(cond.degrees, str) else 'given'}")
        if context:
            self.text += f", reading a context of {context} after the entries"

    def masks(self, p: View) -> list[Value]:
        """Each layer's mask, ``(in, out)`` booleans: ``degree_in <= degree_out`` into a
        hidden layer, ``degree_in < degree_out`` into the outputs. Traced once per body
        (kept on that body's view), so every call of the conditioner reads one set, which
        the code generator builds once (the degrees are constants)."""
        if "_made_masks" not in p.__dict__:
            n, masks = len(self.sizes) - 1, []
            for j in range(n):
                below = ops.name(ops.reshape(getattr(p, f"degrees_{j}"), shape=(self.sizes[j], 1)),
                                 f"degrees_{j}_column")  # fmt: skip
                above = getattr(p, f"degrees_{j + 1}")
                reads = ops.less(below, above) if j == n - 1 else ops.less_equal(below, above)
                masks.append(ops.name(reads, f"mask_{j}"))
            p.__dict__["_made_masks"] = masks
        return p.__dict__["_made_masks"]

    def __call__(self, p: View, h: Value, context: Value | None = None) -> Value:
        """``m(h)``, or ``m([h | context])`` with the context broadcast to h's batch."""
        if self.context:
            wide = ops.broadcast_batch(context, h, event_ndims=1)
            h = ops.name(ops.concat(h, ops.name(wide, "context_b"), axis=-1), "h_in")
        masks, n = self.masks(p), len(self.sizes) - 1
        for j in range(n):
            kernel = ops.name(ops.where(masks[j], p.dense_kernel(j), 0.0), "masked_kernel")
            h = ops.name(ops.linear(h, kernel, p.dense_bias(j)), "h" if j < n - 1 else "out")
            if j < n - 1:
                h = ops.name(_activate(h, self.cond), "h")
        return h


_DOC = {
    "affine_autoregressive": """{paper}

    [shift, s] = m({reads}): entry i's from the entries before i in the order (a MADE)
    scale = exp(log_scale),  log_scale = {formula}
    forward:  y = x * scale + shift,   log|det J| = sum(log_scale)
    inverse:  x = (y - shift) * exp(-log_scale),   log|det J^-1| = -sum(log_scale)""",
    "spline_autoregressive": """{paper}

    raw = m({reads}): entry i's from the entries before i in the order (a MADE)
    forward:  y = spline(x; raw),   log|det J| = sum(log spline'(x))
    inverse:  x = spline^-1(y; raw),   log|det J^-1| = -sum(log spline'(x))
    {formula}""",
}

_PAPER = {
    "maf": "Masked autoregressive flow (MAF, Papamakarios et al. 2017, arXiv:1705.07057).",
    "iaf": "Inverse autoregressive flow (IAF, Kingma et al. 2016, arXiv:1606.04934).",
}


@definition(S.AffineAutoregressive, S.SplineAutoregressive)
def plan_autoregressive(
    layer: S.AffineAutoregressive | S.SplineAutoregressive, shape: tuple[int, ...],
    context: int = 0,
) -> Plan:
    """An autoregressive layer from two parts: the :class:`MADE` and the elementwise map
    from :data:`MAPS` (:class:`~flowbridge.layers.maps.Affine`, or
    :class:`~flowbridge.layers.maps.SplineMap`) applied to every entry. The MADE reads the
    output (``direction="maf"``) or the input (``"iaf"``); the direction that must find
    what it reads is one loop (:func:`flowbridge.ir.loop`) of ``D - 1`` steps from its
    input, each the whole map with the conditioner reading the last step's result, and
    then the map once more, whose log-det is the layer's."""
    (dim,) = shape
    emap = MAPS[layer.type](_Whole(dim), layer)
    made = MADE(layer.conditioner, dim, emap.entries(dim), context)
    maf = layer.direction == "maf"
    reads = "y" if maf else "x"

    def conditioner(p: View, v: Value, c: Value | None) -> Value:
        """m(v) (with the context: m([v | c])): one method every direction calls; its
        parameter is named for what it reads (y for a MAF, x for an IAF)."""
        given = (v,) if c is None else (v, c)
        params = (reads,) if c is None else (reads, "context")
        return ir.call("conditioner", lambda *a: made(p, *a), params, *given)

    def one_pass(p: View, v: Value, c: Value | None, forward: bool):
        out = conditioner(p, v, c)
        return emap.forward(p, out, v, v) if forward else emap.inverse(p, out, v, v)

    def passes(p: View, v: Value, c: Value | None, forward: bool):
        """The ``D``-pass direction: the state (what the conditioner reads) starts at the
        input ``v`` and is recomputed from itself ``D - 1`` times, then once more."""
        apply = emap.forward if forward else emap.inverse
        state, given = ("y", "x") if forward else ("x", "y")
        extra = () if c is None else (c,)
        names = (state, given) + (("context",) if c is not None else ())

        def step(s: Value, w: Value, *rest: Value) -> Value:
            return ops.name(apply(p, conditioner(p, s, rest[0] if rest else None), w, w)[0], state)

        last = ir.loop("step", step, names, p.passes, v, v, *extra)
        return apply(p, conditioner(p, ops.name(last, f"{state}_previous"), c), v, v)

    def forward(p: View, x: Value, c: Value | None = None):
        return passes(p, x, c, True) if maf else one_pass(p, x, c, True)

    def inverse(p: View, y: Value, c: Value | None = None):
        return one_pass(p, y, c, False) if maf else passes(p, y, c, False)

    kind = "MAF" if maf else "IAF"
    loop = "forward" if maf else "inverse"
    config = (f"{kind}: the conditioner reads {reads}, so the {loop} takes D passes (one "
              f"loop); {made.text}; {emap.text}")  # fmt: skip
    doc = _DOC[layer.type].format(paper=_PAPER[layer.direction], reads=reads,
                                  formula=emap.formula)  # fmt: skip
    legend = f"m: the MADE, reading [{reads} | context]" if context else "m: the MADE"
    return Plan(
        class_name=emap.autoregressive_name,
        variant=((kind.capitalize(), kind.capitalize()), *made.words, *emap.words),
        config=config,
        doc=f"{doc}\n    {_wrap(legend + '.')}\n    {_configuration(config)}",
        fields=(*made.fields, *emap.fields, Field("int", "passes")),
        args={**made.args, **emap.args, "passes": dim - 1},
        params=made.params,
        constant_jacobian=False,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        context=context,
        buffers=made.buffers,
        tolerances=emap.tolerances,
    )
