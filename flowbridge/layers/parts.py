"""A coupling's parts (as distrax's ``SplitCoupling``, zuko's
``GeneralCouplingTransform``): the mask's :class:`Partition` of the event and the
conditioners, :class:`MLP` for vectors and :class:`ResNet` for images."""

from __future__ import annotations

from typing import Any

from .. import spec as S
from ..ir import Value, ops
from .base import ZEROS, Field, Init, Param, View, _word


class Partition:
    """Which event entries a coupling passes through (``x_a``) and which it transforms
    (``x_b``). Vector events: a contiguous split of the last axis when the mask allows
    one (no gather), else index buffers. Images: a channel mask splits the channel axis;
    a checkerboard is *masked*: ``x_a = b * x`` (the transformed entries zeroed, ``b``
    the mask), ``x_b = x``, and the map's shift and log-scale are multiplied by
    ``1 - b`` (:meth:`restrict`), so the passed entries come out unchanged (RealNVP's
    own formulation)."""

    legend = "x_a: the entries the mask passes through; x_b: the others"
    masked = False
    axis = -1  # the axis the split runs along, and the conditioner's parameters stack on
    buffers: dict[str, tuple[int, ...]] = {}  # a masked partition's mask

    def __init__(self, mask: Any, event_shape: tuple[int, ...]):
        if len(event_shape) == 3:
            self._image(mask, event_shape)
            return
        if len(event_shape) != 1:
            raise ValueError(f"mask partitions take (D,) or (C, H, W) events, got {event_shape}")
        (dim,) = event_shape
        passed, trans = S.mask_indices(mask, dim)
        self.n_pass, self.n_trans = len(passed), len(trans)
        if passed == list(range(len(passed))):
            self.mode, self.args = "first", {"split": len(passed)}
        elif passed == list(range(dim - len(passed), dim)):
            self.mode, self.args = "last", {"split": dim - len(passed)}
        else:
            merge = sorted(range(dim), key=(passed + trans).__getitem__)
            self.mode = "gather"
            self.args = {"pass_idx": passed, "trans_idx": trans, "merge_idx": merge}
        kind = "int" if self.mode != "gather" else "index"
        self.fields = tuple(Field(kind, name) for name in self.args)
        if self.mode == "gather":
            self.words = ("Gather", "Gather")
            self.text = f"{mask.kind} mask, entries gathered by index"
        else:
            word = "SplitFirst" if self.mode == "first" else "SplitLast"
            self.words, self.text = (word, word), (
                f"the {self.mode} entries pass through (a split, no gather)")

    def _image(self, mask: Any, event_shape: tuple[int, ...]) -> None:
        c, h, w = event_shape
        self.axis = -3  # channels
        if mask.kind == "checkerboard":
            self.masked, self.mode = True, "masked"
            self.n_pass = self.n_trans = c  # the conditioner reads and writes every channel
            # the mask b is traced from two constant vectors, row and column parities:
            # b[h, w] = 1 where (h + parity) % 2 == w % 2, that is (h + w) % 2 == parity;
            # both are constructor arguments, so both parities share one class
            parity = 0 if mask.parity == "even" else 1
            self.args = {"rows": [[float((i + parity) % 2)] for i in range(h)],
                         "cols": [float(j % 2) for j in range(w)]}  # fmt: skip
            self.fields = (Field("constant", "rows"), Field("constant", "cols"))
            self.buffers = {"rows": (h, 1), "cols": (w,)}
            self.words = ("Checkerboard", "Checkerboard")
            self.text = ("checkerboard mask: entries with (h + w) % 2 == parity pass through "
                         "(rows and cols, constructor arguments, hold the parities)")  # fmt: skip
            self.legend = ("x_a = b * x: the entries the checkerboard b passes, the others "
                           "zeroed; x_b = x; shift and log_scale are zero where b is 1")  # fmt: skip
            return
        self.n_pass = c // 2
        self.n_trans = c - self.n_pass
        self.mode = "first" if mask.part == "first" else "last"
        self.args = {"split": self.n_pass if self.mode == "first" else self.n_trans}
        self.fields = (Field("int", "split"),)
        word = f"Channel{mask.part.capitalize()}"
        self.words, self.text = (word, word), (
            f"channel mask: the {mask.part} {self.n_pass} of {c} channels pass through")
        self.legend = "x_a: the channels the mask passes through; x_b: the others"

    def split(self, p: View, x: Value, var: str) -> tuple[Value, Value]:
        """``(passed, transformed)`` parts of ``x``, named ``{var}_a`` and ``{var}_b``."""
        axis = self.axis
        if self.masked:
            return ops.name(x * self._masks(p)[0], f"{var}_a"), x
        if self.mode == "first":
            a = ops.slice(x, axis=axis, start=None, stop=p.split)
            b = ops.slice(x, axis=axis, start=p.split, stop=None)
        elif self.mode == "last":
            b = ops.slice(x, axis=axis, start=None, stop=p.split)
            a = ops.slice(x, axis=axis, start=p.split, stop=None)
        else:
            a, b = ops.take(x, p.pass_idx, axis=axis), ops.take(x, p.trans_idx, axis=axis)
        return ops.name(a, f"{var}_a"), ops.name(b, f"{var}_b")

    def merge(self, p: View, a: Value, b: Value) -> Value:
        """Inverse of :meth:`split`."""
        if self.masked:
            return b  # the passed entries of b are unchanged (see restrict)
        if self.mode == "first":
            return ops.concat(a, b, axis=self.axis)
        if self.mode == "last":
            return ops.concat(b, a, axis=self.axis)
        return ops.take(ops.concat(a, b, axis=self.axis), p.merge_idx, axis=self.axis)

    def restrict(self, p: View, value: Value, name: str) -> Value:
        """``value`` (a shift or log-scale over x_b) zeroed at the passed entries of a
        masked partition, named ``name``; the value itself for a split."""
        if not self.masked:
            return value
        return ops.name(value * self._masks(p)[1], name)

    def _masks(self, p: View) -> tuple[Value, Value]:
        """A masked partition's ``(b, 1 - b)``, each ``(H, W)``: traced once per body
        (kept on that body's view) from the row and column parities."""
        if "_masks" not in p.__dict__:
            diff = ops.name(p.rows - p.cols, "parity_diff")  # 0 where the parities agree
            trans = ops.name(diff * diff, "trans_mask")
            p.__dict__["_masks"] = (ops.name(1.0 - trans, "mask"), trans)
        return p.__dict__["_masks"]


class MLP:
    """The conditioner MLP ``m``: dense layers ``n_in -> *hidden -> n_out`` with the
    spec's activation between them. Kernels ``(in, out)`` start uniform in
    ``+-1/sqrt(fan_in)`` (torch's ``nn.Linear`` rule), biases at zero, and the last
    layer at zero so the coupling starts as the identity (``zero_last=False``: uniform
    too, for the context embedding). Parameters are ``{prefix}{j}.kernel``/``.bias``."""

    def __init__(
        self,
        cond: S.Conditioner,
        n_in: int,
        n_out: int,
        context: int = 0,
        *,
        prefix: str = "conditioner.",
        zero_last: bool = True,
    ):
        self.cond, self.context, self.prefix = cond, context, prefix
        self.sizes = [n_in + context, *cond.hidden, n_out]
        self.legend = "m: the conditioner MLP" + (", reading [x_a | context]" if context else "")
        self.fields = (Field("dense", "sizes"),)
        self.args = {"sizes": self.sizes}
        self.params = stack_params(self.sizes, prefix, zero_last=zero_last)
        depth = len(cond.hidden)
        act, words = activation_words(cond)
        self.words = [(f"Depth{depth}", f"Depth{depth}"), words]
        self.text = f"conditioner with {depth} hidden layer{'s' * (depth != 1)}, {act}"
        if context:
            self.text += f", reading a context of {context} after x_a"

    def __call__(self, p: View, h: Value, context: Value | None = None) -> Value:
        """``m(h)``, or ``m([h | context])`` with the context broadcast to h's batch."""
        if self.context:
            wide = ops.broadcast_batch(context, h, event_ndims=len(h.shape))
            h = ops.name(ops.concat(h, ops.name(wide, "context_b"), axis=-1), "h_in")
        n = len(self.sizes) - 1
        for j in range(n):
            h = ops.linear(h, p.dense_kernel(j), p.dense_bias(j))
            h = ops.name(h, "h" if j < n - 1 else "out")
            if j < n - 1:
                h = ops.name(_activate(h, self.cond), "h")
        return h


class ResNet:
    """RealNVP's convolutional residual conditioner for image couplings (see
    :class:`flowbridge.spec.ResNetConditioner`): convolutions ``conditioner.{j}``,
    kernels ``(k, k, in, out)`` started as torch's ``nn.Conv2d`` does (uniform in
    ``+-1/sqrt(in * k * k)``), biases at zero, the last convolution at zero."""

    legend = "m: the residual conditioner network"

    def __init__(self, cond: S.ResNetConditioner, n_in: int, n_out: int, context: int = 0):
        self.cond = cond
        self.sizes = cond.sizes(n_in, n_out)
        k = cond.kernel_size
        self.fields = (Field("conv", "sizes"),)
        self.args = {"sizes": self.sizes, "kernel_size": k}
        self.params = stack_params(self.sizes, kernel_size=k)
        act, words = activation_words(cond)
        self.words = [(f"Blocks{cond.blocks}", f"Blocks{cond.blocks}"),
                      (f"Channels{cond.channels}", f"Channels{cond.channels}K{k}"), words]  # fmt: skip
        self.text = (f"resnet conditioner: {cond.blocks} residual block"
                     f"{'s' * (cond.blocks != 1)} of {cond.channels} channels, {k}x{k} "
                     f"convolutions, {act}")  # fmt: skip

    def __call__(self, p: View, h: Value, context: Value | None = None) -> Value:
        """``conv_out(act(blocks(conv_in(h))))``, each block ``r + conv(act(conv(act(r))))``."""
        n = len(self.sizes) - 1
        h = ops.name(ops.conv2d(h, p.dense_kernel(0), p.dense_bias(0)), "h")
        for block in range(self.cond.blocks):
            r = h
            for j in (2 * block + 1, 2 * block + 2):
                r = ops.name(ops.conv2d(ops.name(_activate(r, self.cond), "r"), p.dense_kernel(j),
                                        p.dense_bias(j)), "r")  # fmt: skip
            h = ops.name(h + r, "h")
        return ops.name(ops.conv2d(ops.name(_activate(h, self.cond), "h"), p.dense_kernel(n - 1),
                                   p.dense_bias(n - 1)), "out")  # fmt: skip


def stack_params(
    sizes: list[int], prefix: str = "conditioner.", *, kernel_size: int | None = None,
    zero_last: bool = True,
) -> dict[str, Param]:
    """The parameters of a stack of dense layers (``kernel_size=None``: kernels
    ``(in, out)``) or convolutions (kernels ``(k, k, in, out)``) ``sizes[0] -> ... ->
    sizes[-1]``, named ``{prefix}{j}.kernel`` and ``.bias``: kernels start uniform in
    ``+-1/sqrt(fan_in)`` (torch's ``nn.Linear`` and ``nn.Conv2d`` rule), biases at zero,
    and the last layer at zero (``zero_last``) so the layer it conditions starts as the
    identity; the test draw of a bias is uniform in +-0.1."""
    params: dict[str, Param] = {}
    last = len(sizes) - 2 if zero_last else -1
    k = kernel_size or 1
    for j, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        kernel = Init.fan_in_uniform(a * k * k)
        shape = (a, b) if kernel_size is None else (k, k, a, b)
        params[f"{prefix}{j}.kernel"] = Param(shape, ZEROS if j == last else kernel, kernel)
        params[f"{prefix}{j}.bias"] = Param((b,), ZEROS, Init.uniform(0.1))
    return params


def activation_words(cond: Any) -> tuple[str, tuple[str, str]]:
    """A conditioner's activation in words (``"leaky_relu (negative slope 0.01)"``) and
    as a class name's ``(short, detailed)`` words (``("LeakyRelu", "LeakyRelu0p01")``)."""
    act = "".join(w.capitalize() for w in cond.activation.split("_"))
    if cond.activation != "leaky_relu":
        return cond.activation, (act, act)
    return (f"{cond.activation} (negative slope {cond.negative_slope!r})",
            (act, act + _word(cond.negative_slope)))  # fmt: skip


def _activate(h: Value, cond: S.Conditioner | S.ResNetConditioner) -> Value:
    if cond.activation == "leaky_relu":
        return ops.leaky_relu(h, negative_slope=cond.negative_slope)
    if cond.activation == "gelu":  # exact GELU, x * Phi(x) (torch's default, TF's approximate=False)
        erf = ops.name(ops.erf(ops.name(h * 0.7071067811865476, "h_over_sqrt2")), "erf_h")
        return ops.name(0.5 * h, "half_h") * ops.name(1.0 + erf, "one_plus_erf_h")
    return getattr(ops, cond.activation)(h)
