"""Layers that mix the entries by a learned invertible matrix: Glow's invertible 1x1
convolution in its LU parameterisation (an LU linear layer on vectors)."""

from __future__ import annotations

from .. import spec as S
from ..ir import Value, ops
from .base import ZEROS, Field, Init, Param, Plan, View, _configuration, definition

_DOC = """Glow's invertible 1x1 convolution (Kingma & Dhariwal 2018, arXiv:1807.03039), LU form.

    W = P L U,  (P M)[i] = M[indices[i]] (a fixed permutation)
    L = I + the strictly lower part of lower_upper
    U = {upper}
    forward:  y[..., i{pixel}] = sum_j W[i, j] x[..., j{pixel}]
              log|det J| = {count}sum(log|diag U|)
    inverse:  x = U^-1 L^-1 P^T y (two triangular solves),  log|det J^-1| = minus that
    lower_upper starts at the identity, so the layer starts as its permutation.
    {config}"""


@definition(S.Conv1x1)
def plan_conv1x1(layer: S.Conv1x1, shape: tuple[int, ...], context: int = 0) -> Plan:
    """``lower_upper`` ``(C, C)`` (a ``"matrix"`` field) starts at the identity; its test
    draw is the identity plus uniform in +-0.3, and ``log_abs_diag``'s uniform in
    +-0.3. The triangles and the identity are built once from the constant ``positions``
    (``0..C-1``); ``W`` and its inverse's factors are built per call (``C x C``, small
    beside the pixels they mix)."""
    c, image, log = shape[0], len(shape) == 3, layer.diagonal == "log"
    axis, n = (-3, 3) if image else (-1, 1)
    count = shape[1] * shape[2] if image else 1
    permutation = S.conv1x1_permutation(layer, c)
    inverse_indices = sorted(range(c), key=permutation.__getitem__)

    def triangles(p: View) -> tuple[Value, Value, Value, Value]:
        """Constants, traced once per body (kept on its view): the strictly lower and
        strictly upper triangles, the diagonal and the identity."""
        if "_triangles" not in p.__dict__:
            rows = ops.name(ops.reshape(p.positions, shape=(c, 1)), "rows")
            below = ops.name(ops.less(p.positions, rows), "below_diagonal")
            above = ops.name(ops.less(rows, p.positions), "above_diagonal")
            distance = ops.name(ops.abs(rows - p.positions), "distance")  # |i - j|
            eye = ops.name(ops.clamp(1.0 - distance, low=0.0, high=1.0), "eye")
            diagonal = ops.name(ops.less(0.5, eye), "on_diagonal")
            p.__dict__["_triangles"] = below, above, diagonal, eye
        return p.__dict__["_triangles"]

    def factors(p: View) -> tuple[Value, Value]:
        below, above, diagonal, eye = triangles(p)
        lower = ops.name(ops.where(below, p.lower_upper, eye), "lower")
        if log:
            diag = ops.name(ops.reshape(p.signs * ops.exp(p.log_abs_diag), shape=(c, 1)),
                            "diagonal")  # fmt: skip
            upper = ops.where(above, p.lower_upper, ops.where(diagonal, diag, 0.0))
        else:
            upper = ops.where(below, 0.0, p.lower_upper)
        return lower, ops.name(upper, "upper")

    def log_det_one(p: View) -> Value:
        if log:
            total = ops.sum_all(p.log_abs_diag)
        else:
            on = triangles(p)[2]
            magnitude = ops.abs(ops.where(on, p.lower_upper, 1.0))  # |diag U|, 1 off it
            logs = ops.name(ops.log(ops.name(magnitude, "abs_diagonal")), "log_abs_diagonal")
            total = ops.sum_all(logs)
        return ops.name(total * float(count) if image else total, "log_det_one")

    def forward(p: View, x: Value):
        lower, upper = factors(p)
        product = ops.name(ops.matmul(lower, upper), "lower_times_upper")
        weight = ops.name(ops.take(product, p.indices, axis=-2), "weight")  # P L U
        y = ops.matvec(weight, x, axis=axis)
        return y, ops.batch_fill(log_det_one(p), x, event_ndims=n)

    def inverse(p: View, y: Value):
        lower, upper = factors(p)
        eye = triangles(p)[3]
        lower_inv = ops.name(ops.solve_triangular(lower, eye, lower=True), "lower_inverse")
        solve = ops.name(ops.solve_triangular(upper, lower_inv, lower=False), "weight_inverse")
        unpermuted = ops.name(ops.take(y, p.inverse_indices, axis=axis), "y_unpermuted")
        x = ops.matvec(solve, unpermuted, axis=axis)
        return x, ops.batch_fill(-log_det_one(p), y, event_ndims=n)

    upper = ("the strictly upper part of lower_upper + diag(signs * exp(log_abs_diag))"
             if log else "the upper part of lower_upper, diagonal included")  # fmt: skip
    fields = [Field("matrix", "lower_upper", shape="matrix_shape"),
              Field("constant", "positions"), Field("index", "indices"),
              Field("index", "inverse_indices")]  # fmt: skip
    args = {"matrix_shape": [c, c], "positions": [float(i) for i in range(c)],
            "indices": permutation, "inverse_indices": inverse_indices}  # fmt: skip
    params = {"lower_upper": Param((c, c), Init.identity(), Init.identity(0.3))}
    buffers = {"positions": (c,)}
    if log:
        fields += [Field("channel", "log_abs_diag"), Field("constant", "signs")]
        args["signs"] = [float(s) for s in (layer.signs or (1,) * c)]
        params["log_abs_diag"] = Param((c,), ZEROS, Init.uniform(0.3))
        buffers["signs"] = (c,)
    word = "LogDiagonal" if log else ""
    stored = "as fixed signs and log|s|" if log else "directly"
    config = f"{c} {'channels' if image else 'entries'}, U's diagonal stored {stored}"
    return Plan(
        class_name="InvertibleConv1x1" if image else "LULinear",
        variant=((word, word),) if log else (),
        config=config,
        doc=_DOC.format(upper=upper, pixel=", h, w" if image else "",
                        count="H * W * " if image else "",
                        config=_configuration(f"{config}, the permutation (indices) a "
                                              "constructor argument")),  # fmt: skip
        fields=tuple(fields),
        args=args,
        params=params,
        constant_jacobian=True,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        buffers=buffers,
    )
