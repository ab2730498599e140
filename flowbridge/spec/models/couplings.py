"""Coupling layers (NICE, RealNVP, neural spline flows) and the elementwise layers of
every entry."""

from __future__ import annotations

import typing
from typing import Literal

from pydantic import (
    Field,
    StrictBool,
)

from .conditioners import AnyConditioner, Conditioner, ResNetConditioner
from .fields import _schema_description
from .layer import _LayerModel
from .maps import ExpScale, RationalQuadraticSpline, ScaleMap, SplineMap
from .masks import IMAGE_MASKS, HalfMask, Mask, _image_mask_channels, _mask_sizes


class _Coupling(_LayerModel):
    mask: Mask = Field(default_factory=HalfMask)
    conditioner: AnyConditioner = Field(default_factory=Conditioner)

    def _per_entry(self) -> int:
        """Conditioner outputs per transformed entry."""
        return 1

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        image = len(shape) == 3
        if image != (self.mask.kind in IMAGE_MASKS):
            kinds = "checkerboard or channel" if image else "half, split, parity or explicit"
            return [(f"{at}.mask.kind", f"expected a {kinds} mask for events of shape "
                     f"{shape}, got {self.mask.kind!r}")]  # fmt: skip
        if image != isinstance(self.conditioner, ResNetConditioner):
            want = "a resnet conditioner ({kind: resnet})" if image else "an MLP conditioner"
            got = "a resnet" if not image else "an MLP"
            return [(f"{at}.conditioner", f"expected {want} for events of shape {shape}, "
                     f"got {got}")]  # fmt: skip
        if image:
            passed = _image_mask_channels(self.mask, shape)[0]
            if not passed:
                return [(f"{at}.mask", f"expected at least 2 channels for a channel mask, "
                         f"got {shape[0]}")]  # fmt: skip
            return []
        (dim,) = shape
        mask = self.mask
        if mask.kind == "split" and mask.size >= dim:
            return [(f"{at}.mask.size", f"expected fewer than the {dim} event entries, got "
                     f"{mask.size}")]  # fmt: skip
        if mask.kind == "explicit" and len(mask.values) != dim:
            return [(f"{at}.mask.values", f"expected {dim} booleans (one per event entry), "
                     f"got {len(mask.values)}")]  # fmt: skip
        passed, transformed = _mask_sizes(mask, dim)
        if not passed or not transformed:
            return [(f"{at}.mask", f"expected a mask that passes at least one and transforms "
                     f"at least one of the {dim} entries, got {passed} passed")]  # fmt: skip
        return []

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        cond = self.conditioner
        if isinstance(cond, ResNetConditioner):
            n_in, n_out = _image_mask_channels(self.mask, shape)
            sizes, taps = cond.sizes(n_in, n_out * self._per_entry()), cond.kernel_size**2
            return sum(a * b * taps + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
        passed, trans = _mask_sizes(self.mask, shape[0])
        sizes = [passed + context_dim, *cond.hidden, trans * self._per_entry()]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


class AdditiveCoupling(_Coupling):
    """NICE's additive coupling layer (Dinh et al. 2015, arXiv:1410.8516).

    The mask splits the event into the passed entries ``x_a`` and the transformed entries
    ``x_b``; the conditioner ``m`` (one output per transformed entry) reads ``x_a`` (and
    the context ``c`` in a conditional flow, ``m([x_a | c])``):

    - forward: ``y_a = x_a``, ``y_b = x_b + m(x_a)``, log-det 0;
    - inverse: ``x_a = y_a``, ``x_b = y_b - m(y_a)``, log-det 0.

    Attributes:
        type: ``"additive_coupling"``, the tag that picks this layer in a spec's dict (a
            dict must give it; the constructor fills it in).
        mask: which entries pass through: a vector mask (:class:`flowbridge.HalfMask`,
            :class:`flowbridge.SplitMask`, :class:`flowbridge.ParityMask`,
            :class:`flowbridge.ExplicitMask`) for vector events ``(D,)``, an image mask
            (:class:`flowbridge.CheckerboardMask`, :class:`flowbridge.ChannelMask`) for
            image events ``(C, H, W)``; a model or its dict with ``kind``. Default
            ``HalfMask()``.
        conditioner: the network ``m``: a :class:`flowbridge.Conditioner` (an MLP, default
            ``Conditioner()``) for vector events, a :class:`flowbridge.ResNetConditioner`
            for image events.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> net = fb.Conditioner(hidden=(8,))
        >>> layer = fb.AdditiveCoupling(mask=fb.ParityMask(), conditioner=net)
        >>> spec = fb.FlowSpec(event_shape=(4,), layers=[layer])
        >>> flow = fb.to_numpy(spec, fb.init_params(spec, init="random"))
        >>> y, log_det = flow.forward_with_log_det(np.ones((3, 4)))
        >>> log_det, np.allclose(flow.inverse(y), 1.0)
        (array([0., 0., 0.]), True)
    """

    model_config = _schema_description(
        "NICE additive coupling (arXiv:1410.8516): ``y_b = x_b + m(x_a)``, log-det 0."
    )

    type: Literal["additive_coupling"] = "additive_coupling"


class AffineCoupling(_Coupling):
    """RealNVP's affine coupling layer (Dinh et al. 2017, arXiv:1605.08803).

    The mask splits the event into the passed entries ``x_a`` and the transformed entries
    ``x_b``; the conditioner reads ``x_a`` (with the context, ``[x_a | c]``) and gives
    ``[t | s] = m(x_a)`` (two outputs per transformed entry, shift first), and the scale
    map turns the raw ``s`` into ``log_scale`` (default :class:`flowbridge.ExpScale`,
    ``log_scale = s``):

    - forward: ``y_a = x_a``, ``y_b = x_b * scale(s(x_a)) + t(x_a)`` with
      ``scale = exp(log_scale)``, log-det ``sum(log scale)`` over the transformed entries;
    - inverse: ``x_a = y_a``, ``x_b = (y_b - t(y_a)) * exp(-log_scale)``, log-det
      ``-sum(log scale)``.

    Attributes:
        type: ``"affine_coupling"``, the tag that picks this layer in a spec's dict (a
            dict must give it; the constructor fills it in).
        mask: which entries pass through: a vector mask (:class:`flowbridge.HalfMask`,
            :class:`flowbridge.SplitMask`, :class:`flowbridge.ParityMask`,
            :class:`flowbridge.ExplicitMask`) for vector events ``(D,)``, an image mask
            (:class:`flowbridge.CheckerboardMask`, :class:`flowbridge.ChannelMask`) for
            image events ``(C, H, W)``; a model or its dict with ``kind``. Default
            ``HalfMask()``.
        conditioner: the network ``m``: a :class:`flowbridge.Conditioner` (an MLP, default
            ``Conditioner()``) for vector events, a :class:`flowbridge.ResNetConditioner`
            for image events.
        scale: the scale map: :class:`flowbridge.ExpScale` (default),
            :class:`flowbridge.ClampScale`, :class:`flowbridge.SoftClampScale`,
            :class:`flowbridge.SigmoidScale` or :class:`flowbridge.SoftplusScale`; a model
            or its dict with ``kind``.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> net = fb.Conditioner(hidden=(8,))
        >>> layer = fb.AffineCoupling(conditioner=net, scale=fb.ClampScale())
        >>> spec = fb.FlowSpec(event_shape=(4,), layers=[layer])
        >>> flow = fb.to_numpy(spec, fb.init_params(spec, init="random"))
        >>> y, log_det = flow.forward_with_log_det(np.ones((3, 4)))
        >>> x, inverse_log_det = flow.inverse_with_log_det(y)
        >>> y.shape, np.allclose(x, 1.0), np.allclose(log_det, -inverse_log_det)
        ((3, 4), True, True)
    """

    model_config = _schema_description(
        """RealNVP affine coupling (arXiv:1605.08803):
        ``y_b = x_b * scale(s(x_a)) + t(x_a)``, log-det ``sum(log scale)``."""
    )

    type: Literal["affine_coupling"] = "affine_coupling"
    scale: ScaleMap = Field(default_factory=ExpScale)

    def _per_entry(self) -> int:
        return 2  # [shift | raw log-scale]

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        errors = super().check(shape, at)
        if errors and errors[0][0] != f"{at}.mask":  # a mask that does not fit the event
            return errors
        if self.scale.kind == "clamp" and not self.scale.low < self.scale.high:
            errors.append((f"{at}.scale.high", f"expected a value > low ({self.scale.low}), "
                           f"got {self.scale.high}"))  # fmt: skip
        return errors


class ElementwiseAffine(_LayerModel):
    """An affine map of every entry, ``y = x * scale(s) + t``: the layer a flow on a
    one-dimensional event is made of, where no coupling can split the entries.

    In a flow with a context ``c`` the conditioner reads the context alone,
    ``[t | s] = m(c)`` (two outputs per entry, shift first: a conditional Gaussian for a
    one-dimensional event, as sbi's ``nsf`` uses a context-only map for one-dimensional
    θ); without a context, ``t`` and ``s`` are learned vectors (the weights ``shift`` and
    ``s``, starting at zero). The scale map turns the raw ``s`` into ``log_scale`` as in
    :class:`AffineCoupling`:

    - forward: ``y = x * exp(log_scale) + t``, log-det ``sum(log_scale)``;
    - inverse: ``x = (y - t) * exp(-log_scale)``, log-det ``-sum(log_scale)``.

    A stack of such layers is one affine map, so :func:`flowbridge.realnvp` and
    :func:`flowbridge.nice` give a one-dimensional flow one of them. It takes vector
    events ``(D,)``, any ``D``.

    Attributes:
        type: ``"elementwise_affine"``, the tag that picks this layer in a spec's dict.
        conditioner: the MLP ``m`` from the context to ``[t | s]``
            (:class:`flowbridge.Conditioner`, default ``Conditioner()``), its last layer
            starting at zero (the identity); unused in a flow without a context.
        scale: the scale map (:class:`flowbridge.ExpScale`, default,
            :class:`flowbridge.ClampScale`, :class:`flowbridge.SoftClampScale`,
            :class:`flowbridge.SigmoidScale` or :class:`flowbridge.SoftplusScale`); a model
            or its dict with ``kind``.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.FlowSpec(event_shape=(1,), layers=[fb.ElementwiseAffine()])
        >>> flow = fb.to_numpy(spec, {"layers.0.shift": [2.0], "layers.0.s": [np.log(3.0)]})
        >>> y, log_det = flow.forward_with_log_det(np.ones((2, 1)))
        >>> y[:, 0], np.allclose(log_det, np.log(3.0))
        (array([5., 5.]), True)
    """

    model_config = _schema_description(
        """An affine map of every entry, ``y = x * scale(s) + t``: ``[t | s] = m(c)`` from
        the context alone in a conditional flow, learned vectors otherwise; log-det
        ``sum(log scale)``. What a one-dimensional event's flow is made of."""
    )

    type: Literal["elementwise_affine"] = "elementwise_affine"
    conditioner: Conditioner = Field(default_factory=Conditioner)
    scale: ScaleMap = Field(default_factory=ExpScale)
    ranks: typing.ClassVar[tuple[int, ...]] = (1,)

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        if self.scale.kind == "clamp" and not self.scale.low < self.scale.high:
            return [(f"{at}.scale.high", f"expected a value > low ({self.scale.low}), "
                     f"got {self.scale.high}")]  # fmt: skip
        return []

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        if not context_dim:
            return 2 * shape[0]
        sizes = [context_dim, *self.conditioner.hidden, 2 * shape[0]]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


class SplineCoupling(_Coupling):
    """A neural spline coupling layer (Durkan et al. 2019, arXiv:1906.04032; Pyro's
    ``SplineCoupling``).

    The mask splits the event into the passed entries ``x_a`` and the transformed entries
    ``x_b``; the conditioner reads ``x_a`` (with the context, ``[x_a | c]``) and gives each
    transformed entry its spline's raw parameters (``3K - 1`` each, in the layout
    :class:`flowbridge.RationalQuadraticSpline` states):

    - forward: ``y_a = x_a``, ``y_b = spline(x_b; m(x_a))``, log-det the sum of the
      spline's log-derivatives over the transformed entries;
    - inverse: ``x_a = y_a``, ``x_b = spline^-1(y_b; m(y_a))``, its negative.

    With ``passed_spline``, the passed entries go through a spline of their own too, its
    raw parameters learned (``a_widths``, ``a_heights``, ``a_derivatives`` (and
    ``a_lambdas``), shaped as :class:`flowbridge.ElementwiseSpline`'s): ``y_a = spline_a(x_a)``, the
    conditioner still reading ``x_a`` (so the inverse undoes ``spline_a`` first): Pyro's
    ``SplineCoupling(identity=False)``, its default.

    Vector events ``(D,)`` with a vector mask and an MLP; image events ``(C, H, W)`` with
    a checkerboard or channel mask and a ResNet conditioner, whose ``n * (3K - 1)`` output
    channels are the layout's blocks, each channel-major (a checkerboard transforms every
    channel and keeps the passed entries: ``y = x + (1 - b) * (spline(x) - x)``).

    Attributes:
        type: ``"spline_coupling"``, the tag that picks this layer in a spec's dict.
        mask: which entries pass through (vectors: :class:`flowbridge.HalfMask`, default,
            :class:`flowbridge.SplitMask`, :class:`flowbridge.ParityMask`,
            :class:`flowbridge.ExplicitMask`; images: :class:`flowbridge.CheckerboardMask`,
            :class:`flowbridge.ChannelMask`).
        conditioner: the network ``m``, its last layer starting at zero, so the layer
            starts as the identity: an MLP (:class:`flowbridge.Conditioner`) for vectors,
            a :class:`flowbridge.ResNetConditioner` for images.
        spline: the spline map: :class:`flowbridge.RationalQuadraticSpline` (default) or
            :class:`flowbridge.RationalLinearSpline` (Pyro's ``order="linear"``); a model
            or its dict with ``kind``.
        passed_spline: whether the passed entries go through a learned spline of their
            own (Pyro's ``identity=False``); default ``False`` (they pass unchanged).

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> layer = fb.SplineCoupling(spline=fb.RationalQuadraticSpline(bins=4))
        >>> spec = fb.FlowSpec(event_shape=(4,), layers=[layer])
        >>> flow = fb.to_numpy(spec, fb.init_params(spec, init="random"))
        >>> x = np.array([[0.5, -1.0, 2.0, 7.0]])  # 7.0 lies in the identity tail
        >>> y, log_det = flow.forward_with_log_det(x)
        >>> y[0, 3], bool(np.allclose(flow.inverse(y), x))
        (np.float64(7.0), True)
    """

    model_config = _schema_description(
        """Neural spline coupling (arXiv:1906.04032): ``y_b = spline(x_b; m(x_a))``, a
        rational-quadratic spline per transformed entry; log-det its log-derivatives' sum."""
    )

    type: Literal["spline_coupling"] = "spline_coupling"
    spline: SplineMap = Field(default_factory=RationalQuadraticSpline)
    passed_spline: StrictBool = False

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        errors = super().check(shape, at)
        if self.passed_spline and len(shape) == 3:
            errors.append((f"{at}.passed_spline", "expected false for image events (a spline "
                           "of the passed entries is a vector layer's), got true"))  # fmt: skip
        return errors

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        own = 0
        if self.passed_spline and len(shape) == 1:
            own = _mask_sizes(self.mask, shape[0])[0] * self.spline.per_entry
        return super().param_count(shape, context_dim) + own

    def _per_entry(self) -> int:
        return self.spline.per_entry


class ElementwiseSpline(_LayerModel):
    """A rational-quadratic spline of every entry (Pyro's ``Spline`` and
    ``ConditionalSpline``): the spline layer of a one-dimensional event, and an
    elementwise layer between couplings.

    In a flow with a context ``c`` the conditioner reads the context alone and gives every
    entry its raw parameters (``m(c)``, ``3K - 1`` per entry in the layout
    :class:`flowbridge.RationalQuadraticSpline` states); without a context they are learned
    tensors: ``widths`` and ``heights`` ``(D, K)``, ``derivatives`` ``(D, K - 1)``, starting
    at zero (the identity). Forward ``y = spline(x)``, log-det the sum of its
    log-derivatives; the inverse its inverse.

    Attributes:
        type: ``"elementwise_spline"``, the tag that picks this layer in a spec's dict.
        conditioner: the MLP ``m`` from the context (:class:`flowbridge.Conditioner`),
            its last layer starting at zero; unused in a flow without a context.
        spline: the spline map: :class:`flowbridge.RationalQuadraticSpline` (default) or
            :class:`flowbridge.RationalLinearSpline` (Pyro's ``order="linear"``); a model
            or its dict with ``kind``.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.FlowSpec(event_shape=(1,), layers=[fb.ElementwiseSpline()])
        >>> flow = fb.to_numpy(spec)  # zero raw parameters: the identity
        >>> flow.forward_with_log_det(np.array([[0.3]]))
        (array([[0.3]]), array([0.]))
    """

    model_config = _schema_description(
        """A rational-quadratic spline of every entry: raw parameters ``m(c)`` from the
        context alone in a conditional flow, learned tensors otherwise."""
    )

    type: Literal["elementwise_spline"] = "elementwise_spline"
    conditioner: Conditioner = Field(default_factory=Conditioner)
    spline: SplineMap = Field(default_factory=RationalQuadraticSpline)
    ranks: typing.ClassVar[tuple[int, ...]] = (1,)

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        per_entry = self.spline.per_entry * shape[0]
        if not context_dim:
            return per_entry
        sizes = [context_dim, *self.conditioner.hidden, per_entry]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
