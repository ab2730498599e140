"""The layer models of a :class:`~flowbridge.FlowSpec`: masks, scale maps, conditioners
and layers, each a validated, frozen pydantic model, and the field types they share.

Masks say which event entries *pass through* a coupling unchanged (they feed the
conditioner); the others are transformed. ``half`` passes the first or last part, whose
size is ``floor(D / 2)`` (``rounding="floor"``, Pyro's ``split_dim = D // 2``) or
``ceil(D / 2)``; ``split`` the first or last ``size`` entries (TFP's ``num_masked``);
``parity`` passes the even or odd indices; ``explicit`` gives one
boolean per entry, ``true`` = passes through.

A model checks its own fields; what it must satisfy against the event it acts on, it says
in :meth:`check`, which the flow calls (:mod:`flowbridge.spec.flow`).
"""

from __future__ import annotations

import inspect
import math
import typing
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from ..document import show as _show
from ..limits import F32_MAX, F32_TINY, MAX_INT
from .errors import translate


def _integral(value: Any) -> Any:
    """JSON has one number type: ``4.0`` is the integer 4 (as JSON Schema says)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_INT:
        return int(value)
    return value


Int = Annotated[StrictInt, BeforeValidator(_integral), Field(le=MAX_INT)]
PosInt = Annotated[Int, Field(gt=0)]
NonNegInt = Annotated[Int, Field(ge=0)]
#: The conditioners' activations, listed once: the conditioners' fields and the presets'
#: arguments take this type.
Activation = Literal["relu", "tanh", "leaky_relu", "elu", "gelu"]


def _constant(low: float, high: float, *, positive: bool = False):
    """A float constant written into generated code: finite, and 0 or of magnitude in
    ``[low, high]`` (``positive``: a number in ``[low, high]``). Both bounds are float32
    normals, so every backend and dtype holds the constant as it is, never as infinity,
    zero or a subnormal."""
    if positive:
        what = f"a number in [{low:.7g}, {high:.7g}]"
        ranges = [{"minimum": low, "maximum": high}]
    else:
        what = f"0 or a magnitude in [{low:.7g}, {high:.7g}] (float32's normal range)"
        ranges = [{"const": 0}, {"minimum": low, "maximum": high},
                  {"minimum": -high, "maximum": -low}]  # fmt: skip

    def check(value: float) -> float:
        ok = low <= value <= high if positive else value == 0.0 or low <= abs(value) <= high
        if not ok:
            raise PydanticCustomError("constant", f"expected {what}, got {{got}}", {"got": value})
        return float(value)

    return Annotated[float, Field(strict=True, allow_inf_nan=False,
                                  json_schema_extra={"anyOf": ranges}),
                     AfterValidator(check)]  # fmt: skip


#: Any constant: 0 or a float32 normal magnitude.
Finite = _constant(F32_TINY, F32_MAX)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, /, **data: Any):  # positional-only: a "self" key is a field name
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise translate(exc, TAGS) from None


def _schema_description(description: str) -> ConfigDict:
    """A model's config that gives its JSON Schema ``description`` (cleaned as a docstring
    is), where pydantic would copy the class docstring: the docstrings carry the API
    reference's sections and examples, the published schema keeps its own text."""
    return ConfigDict(json_schema_extra={"description": inspect.cleandoc(description)})


# ----------------------------------------------------------------------------- masks
class HalfMask(_Model):
    """Pass the first or last part of a vector event through; the rest is transformed.

    Of the ``D`` entries of a vector event ``(D,)``, the passed part has ``floor(D / 2)``
    (``rounding="floor"``, Pyro's ``split_dim = D // 2``) or ``ceil(D / 2)``
    (``rounding="ceil"``). It is the default mask of a coupling.

    Attributes:
        kind: ``"half"``, the tag that picks this mask in a spec's dict (a dict must give
            it; the constructor fills it in).
        part: ``"first"`` (default) or ``"last"``: the end of the event that passes
            through.
        rounding: ``"floor"`` (default) or ``"ceil"``: the passed part's size,
            ``floor(D / 2)`` or ``ceil(D / 2)``.

    Example:
        >>> import flowbridge as fb
        >>> from flowbridge.spec import mask_indices
        >>> mask = {"kind": "half", "part": "last", "rounding": "ceil"}
        >>> spec = fb.FlowSpec.from_dict(
        ...     {"event_shape": [5], "layers": [{"type": "affine_coupling", "mask": mask}]})
        >>> mask_indices(spec.layers[0].mask, 5)  # (passed, transformed)
        ([2, 3, 4], [0, 1])
        >>> fb.HalfMask(part="middle")
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: part: expected one of 'first' or 'last', got 'middle'
    """

    model_config = _schema_description(
        "Pass the first or last part of the event through; the rest is transformed."
    )

    kind: Literal["half"] = "half"
    part: Literal["first", "last"] = "first"
    rounding: Literal["floor", "ceil"] = "floor"


class SplitMask(_Model):
    """Pass the first or last ``size`` entries of a vector event through.

    TFP's ``num_masked``: a positive ``num_masked`` is ``size`` with ``part="first"``, a
    negative ``num_masked`` is ``part="last"`` (``size=-num_masked``). The other
    entries are transformed, so the flow checks that ``size`` is below the event size
    ``D``.

    Attributes:
        kind: ``"split"``, the tag that picks this mask in a spec's dict.
        part: ``"first"`` (default) or ``"last"``: the end of the event that passes
            through.
        size: the number of entries passed through, a positive integer below ``D``
            (required).

    Example:
        >>> import flowbridge as fb
        >>> layer = {"type": "affine_coupling", "mask": {"kind": "split", "size": 3}}
        >>> fb.FlowSpec.from_dict({"event_shape": [4], "layers": [layer]}).layers[0].mask
        SplitMask(kind='split', part='first', size=3)
        >>> layer["mask"]["size"] = 4
        >>> fb.FlowSpec.from_dict({"event_shape": [4], "layers": [layer]})
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0].mask.size: expected fewer than ..., got 4
    """

    model_config = _schema_description(
        """Pass the first or last ``size`` entries through (TFP's ``num_masked``; a negative
        ``num_masked`` is ``part="last"``)."""
    )

    kind: Literal["split"] = "split"
    part: Literal["first", "last"] = "first"
    size: PosInt


class ParityMask(_Model):
    """Pass the even (0, 2, ...) or odd (1, 3, ...) indices of a vector event through.

    Of ``D`` entries, ``even`` passes ``ceil(D / 2)`` and ``odd`` passes ``floor(D / 2)``;
    the others are transformed. :func:`flowbridge.nice` alternates the two.

    Attributes:
        kind: ``"parity"``, the tag that picks this mask in a spec's dict.
        parity: ``"even"`` (default) or ``"odd"``: the indices that pass through.

    Example:
        >>> import flowbridge as fb
        >>> from flowbridge.spec import mask_indices
        >>> mask_indices(fb.ParityMask(parity="odd"), 5)  # (passed, transformed)
        ([1, 3], [0, 2, 4])
        >>> coupling = fb.AdditiveCoupling(mask=fb.ParityMask(parity="odd"))
        >>> fb.FlowSpec(event_shape=(1,), layers=[coupling])
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0].mask: expected a mask that passes ..., got 0 passed
    """

    model_config = _schema_description("Pass the even (0, 2, ...) or odd indices through.")

    kind: Literal["parity"] = "parity"
    parity: Literal["even", "odd"] = "even"


class ExplicitMask(_Model):
    """One boolean per entry of a vector event; ``true`` passes through.

    The flow checks that there is one boolean per event entry and that the mask passes at
    least one entry and transforms at least one.

    Attributes:
        kind: ``"explicit"``, the tag that picks this mask in a spec's dict.
        values: ``D`` booleans, ``true`` for an entry that passes through, ``false`` for one
            that is transformed (required; strict: ``1`` and ``0`` are refused).

    Example:
        >>> import flowbridge as fb
        >>> from flowbridge.spec import mask_indices
        >>> mask = {"kind": "explicit", "values": [True, False, False, True]}
        >>> layers = [{"type": "affine_coupling", "mask": mask}]
        >>> spec = fb.FlowSpec.from_dict({"event_shape": [4], "layers": layers})
        >>> mask_indices(spec.layers[0].mask, 4)  # (passed, transformed)
        ([0, 3], [1, 2])
        >>> fb.FlowSpec.from_dict({"event_shape": [3], "layers": layers})
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0].mask.values: expected 3 booleans ..., got 4
    """

    model_config = _schema_description("One boolean per event entry; ``true`` passes through.")

    kind: Literal["explicit"] = "explicit"
    values: tuple[StrictBool, ...]


class CheckerboardMask(_Model):
    """RealNVP's spatial checkerboard mask, for image events ``(C, H, W)``.

    It passes the entries at ``(c, h, w)`` with ``(h + w) % 2`` equal to 0 (``even``) or
    1 (``odd``), in every channel alike (RealNVP's spatial checkerboard, arXiv:1605.08803).
    The conditioner (a :class:`flowbridge.ResNetConditioner`) reads the whole image with
    the transformed entries zeroed, and its outputs at the passed entries are ignored.

    Attributes:
        kind: ``"checkerboard"``, the tag that picks this mask in a spec's dict.
        parity: ``"even"`` (default) or ``"odd"``: the value of ``(h + w) % 2``, 0 or 1, at
            the entries that pass through.

    Example:
        >>> import flowbridge as fb
        >>> coupling = fb.AffineCoupling(mask=fb.CheckerboardMask(parity="odd"),
        ...                              conditioner=fb.ResNetConditioner(blocks=1, channels=8))
        >>> fb.FlowSpec(event_shape=(2, 4, 4), layers=[coupling]).output_shape
        (2, 4, 4)
        >>> fb.FlowSpec(event_shape=(4,), layers=[coupling])
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0].mask.kind: expected a half, ... got 'checkerboard'
    """

    model_config = _schema_description(
        """Image events ``(C, H, W)``: pass the entries at ``(c, h, w)`` with ``(h + w) % 2``
        equal to 0 (``even``) or 1 (``odd``), in every channel alike (RealNVP's spatial
        checkerboard). The conditioner reads the whole image with the transformed entries
        zeroed, and its outputs at the passed entries are ignored."""
    )

    kind: Literal["checkerboard"] = "checkerboard"
    parity: Literal["even", "odd"] = "even"


class ChannelMask(_Model):
    """RealNVP's channel-wise mask, for image events ``(C, H, W)``.

    It passes the first or last ``floor(C / 2)`` channels (RealNVP's channel-wise mask,
    arXiv:1605.08803); the other channels are transformed. The conditioner (a
    :class:`flowbridge.ResNetConditioner`) reads the passed channels and writes the
    transformed ones, so the events need at least 2 channels.

    Attributes:
        kind: ``"channel"``, the tag that picks this mask in a spec's dict.
        part: ``"first"`` (default) or ``"last"``: the channels that pass through.

    Example:
        >>> import flowbridge as fb
        >>> net = {"kind": "resnet", "blocks": 1, "channels": 8}
        >>> layers = [{"type": "affine_coupling", "mask": {"kind": "channel"}, "conditioner": net}]
        >>> fb.FlowSpec.from_dict({"event_shape": [2, 4, 4], "layers": layers}).layers[0].mask
        ChannelMask(kind='channel', part='first')
        >>> fb.FlowSpec.from_dict({"event_shape": [1, 4, 4], "layers": layers})
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0].mask: expected at least 2 channels ..., got 1
    """

    model_config = _schema_description(
        """Image events ``(C, H, W)``: pass the first or last ``floor(C / 2)`` channels
        (RealNVP's channel-wise mask); the other channels are transformed."""
    )

    kind: Literal["channel"] = "channel"
    part: Literal["first", "last"] = "first"


Mask = Annotated[
    HalfMask | SplitMask | ParityMask | ExplicitMask | CheckerboardMask | ChannelMask,
    Field(discriminator="kind"),
]
#: The mask kinds for image events; the others take vector events.
IMAGE_MASKS = ("checkerboard", "channel")


# ------------------------------------------------------------------------ scale maps
class ExpScale(_Model):
    """The exponential scale map: ``scale = exp(s)``, log-scale ``s``.

    The scale of RealNVP (arXiv:1605.08803) and of TFP's ``RealNVP``: an affine coupling
    computes ``y_b = x_b * scale + shift`` from the conditioner's raw output ``s``, with
    log-det ``sum(s)`` over the transformed entries. It is the default scale map of an
    :class:`flowbridge.AffineCoupling`.

    Attributes:
        kind: ``"exp"``, the tag that picks this scale map in a spec's dict (a dict must
            give it; the constructor fills it in).

    Example:
        >>> import flowbridge as fb
        >>> layers = [{"type": "affine_coupling", "scale": {"kind": "exp"}}]
        >>> fb.FlowSpec.from_dict({"event_shape": [4], "layers": layers}).layers[0].scale
        ExpScale(kind='exp')
        >>> fb.AffineCoupling().scale == fb.ExpScale()
        True
    """

    model_config = _schema_description(
        "``scale = exp(s)``, log-scale ``s`` (RealNVP, TFP's ``RealNVP``)."
    )

    kind: Literal["exp"] = "exp"


class ClampScale(_Model):
    """The clamped scale map: ``scale = exp(clamp(s, low, high))``.

    The log-scale is the conditioner's raw output ``s`` clamped to ``[low, high]``, with the
    gradient passed straight through the clamp (Pyro's ``AffineCoupling`` with
    ``log_scale_min_clip=-5``, ``log_scale_max_clip=3``, the defaults here). The flow
    checks ``low < high``.

    Attributes:
        kind: ``"clamp"``, the tag that picks this scale map in a spec's dict.
        low: the lowest log-scale, default ``-5.0``; 0 or a magnitude in float32's normal
            range ``[1.175494e-38, 3.402823e+38]``.
        high: the highest log-scale, default ``3.0``; the same range, and above ``low``.

    Example:
        >>> import flowbridge as fb
        >>> scale = {"kind": "clamp", "low": -2.0, "high": 2.0}
        >>> layers = [{"type": "affine_coupling", "scale": scale}]
        >>> fb.FlowSpec.from_dict({"event_shape": [4], "layers": layers}).layers[0].scale
        ClampScale(kind='clamp', low=-2.0, high=2.0)
        >>> scale["high"] = -3.0
        >>> fb.FlowSpec.from_dict({"event_shape": [4], "layers": layers})
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0].scale.high: expected a value > low (-2.0), got -3.0
    """

    model_config = _schema_description(
        """``scale = exp(clamp(s, low, high))``, gradient passed straight through the clamp
        (Pyro's ``AffineCoupling`` with ``log_scale_min_clip=-5``, ``log_scale_max_clip=3``)."""
    )

    kind: Literal["clamp"] = "clamp"
    low: Finite = -5.0
    high: Finite = 3.0


class SoftClampScale(_Model):
    """The soft-clamped scale map: ``scale = exp(c * tanh(s / c))`` with ``c = bound``.

    The log-scale ``c * tanh(s / c)`` is a smooth clamp of the conditioner's raw output
    ``s`` to ``(-c, c)``.

    Attributes:
        kind: ``"soft_clamp"``, the tag that picks this scale map in a spec's dict.
        bound: ``c``, default ``3.0``; a number in ``[1.175494e-38, 8.507059e+37]`` (both
            ``bound`` and ``1 / bound`` are written into the generated code, so both must be
            float32 normals).

    Example:
        >>> import flowbridge as fb
        >>> layers = [{"type": "affine_coupling", "scale": {"kind": "soft_clamp"}}]
        >>> fb.FlowSpec.from_dict({"event_shape": [4], "layers": layers}).layers[0].scale
        SoftClampScale(kind='soft_clamp', bound=3.0)
        >>> fb.SoftClampScale(bound=0.0)
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: bound: expected a number in [1.175494e-38, ...], got 0.0
    """

    model_config = _schema_description(
        "``scale = exp(c * tanh(s / c))`` with ``c = bound``: a smooth clamp to (-c, c)."
    )

    kind: Literal["soft_clamp"] = "soft_clamp"
    # 1 / bound is written into the code too, so both must be float32 normals
    bound: _constant(F32_TINY, 1.0 / F32_TINY, positive=True) = 3.0


class SigmoidScale(_Model):
    """Glow's scale map: ``scale = sigmoid(s + offset)``, log-scale ``log_sigmoid(s + offset)``.

    Glow (arXiv:1807.03039) uses offset 2: ``scale = sigmoid(s + 2)``, log-scale
    ``log_sigmoid(s + 2)``, a scale in (0, 1). flowbridge keeps RealNVP's order
    ``y = x * scale + shift`` for every scale map; Glow's code adds the shift before
    scaling, which is the same family under another weighting.

    Attributes:
        kind: ``"sigmoid"``, the tag that picks this scale map in a spec's dict.
        offset: added to ``s`` before the sigmoid, default ``2.0``; 0 or a magnitude in
            float32's normal range ``[1.175494e-38, 3.402823e+38]``.

    Example:
        >>> import flowbridge as fb
        >>> layers = [{"type": "affine_coupling", "scale": {"kind": "sigmoid"}}]
        >>> fb.FlowSpec.from_dict({"event_shape": [4], "layers": layers}).layers[0].scale
        SigmoidScale(kind='sigmoid', offset=2.0)
        >>> fb.SigmoidScale(offset=float("nan"))
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: offset: expected a finite number, got nan
    """

    model_config = _schema_description(
        """Glow's ``scale = sigmoid(s + offset)`` (offset 2), log-scale ``log_sigmoid(s + 2)``.

        flowbridge keeps RealNVP's order ``y = x * scale + shift`` for every scale map; Glow's
        code adds the shift before scaling, which is the same family under another weighting.
        """
    )

    kind: Literal["sigmoid"] = "sigmoid"
    offset: Finite = 2.0


ScaleMap = Annotated[
    ExpScale | ClampScale | SoftClampScale | SigmoidScale, Field(discriminator="kind")
]


class Conditioner(_Model):
    """The MLP that maps the passed-through entries to the coupling's parameters.

    The conditioner of a coupling on vector events ``(D,)``: dense layers
    ``n_pass (+ context) -> *hidden -> n_out`` with the activation between them and none
    after the last. ``hidden`` lists hidden-layer widths (empty: a single affine map).
    The output layer has ``n_trans`` units for an additive coupling and ``2 * n_trans`` for
    an affine one, ordered ``[shift | raw log-scale]``. In a conditional flow it reads
    ``[x_a | c]`` (see :class:`flowbridge.FlowSpec`). Its weights are
    ``layers.{i}.conditioner.{j}.kernel`` ``(in, out)`` and ``.bias`` ``(out,)``; the last
    layer starts at zero, so the coupling starts as the identity.

    Attributes:
        hidden: the hidden-layer widths, positive integers, default ``(64, 64)``; at most
            ``depth`` layers of at most ``width`` units (the ceilings of
            :func:`flowbridge.limits`).
        activation: ``"relu"`` (default), ``"tanh"``, ``"leaky_relu"``, ``"elu"`` or
            ``"gelu"``.
        negative_slope: the slope of ``leaky_relu`` below zero, in ``[0, 1]``, default
            ``0.01``; read only with ``activation="leaky_relu"``.

    Example:
        >>> import flowbridge as fb
        >>> coupling = fb.AffineCoupling(conditioner=fb.Conditioner(hidden=(8,)))
        >>> fb.param_count(fb.FlowSpec(event_shape=(4,), layers=[coupling]))  # 2->8->4
        60
        >>> fb.Conditioner(hidden=(8, 0))
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: hidden[1]: expected a positive integer, got 0
    """

    model_config = _schema_description(
        """The MLP that maps the passed-through entries to the coupling's parameters.

        ``hidden`` lists hidden-layer widths (empty: a single affine map). The output layer
        has ``n_trans`` units for an additive coupling and ``2 * n_trans`` for an affine one,
        ordered ``[shift | raw log-scale]``.
        """
    )

    hidden: tuple[PosInt, ...] = (64, 64)
    activation: Activation = "relu"
    negative_slope: Annotated[Finite, Field(ge=0, le=1)] = 0.01  # leaky_relu only


def _odd(value: int) -> int:
    if value % 2 != 1:
        raise PydanticCustomError("constant", "expected an odd kernel size (same padding), "
                                  "got {got}", {"got": value})  # fmt: skip
    return value


class ResNetConditioner(_Model):
    """RealNVP's convolutional residual conditioner, for image events ``(C, H, W)``.

    A ``kernel_size`` convolution to ``channels`` feature maps, ``blocks`` residual blocks
    (activation, convolution, activation, convolution, added to the block's input), the
    activation, and a ``kernel_size`` convolution to the coupling's parameters, ordered
    ``[shift | raw log-scale]`` along channels. Convolutions are stride 1 with "same"
    zero padding; the last one starts at zero (the coupling starts as the identity).
    Kernels are ``(k, k, in, out)``. RealNVP (arXiv:1605.08803) also normalises inside its
    blocks; flowbridge's blocks hold no state. Image couplings need this conditioner, and
    vector couplings a :class:`flowbridge.Conditioner`.

    Attributes:
        kind: ``"resnet"``, required in a spec's dict (a conditioner without it is an
            MLP, :class:`flowbridge.Conditioner`); the constructor fills it in.
        blocks: the number of residual blocks, a non-negative integer, default 2; at most
            the ``depth`` ceiling of :func:`flowbridge.limits`.
        channels: the feature maps inside, a positive integer, default 64; at most the
            ``width`` ceiling.
        kernel_size: ``k``, an odd positive integer (same padding), default 3.
        activation: ``"relu"`` (default), ``"tanh"``, ``"leaky_relu"``, ``"elu"`` or
            ``"gelu"``.
        negative_slope: the slope of ``leaky_relu`` below zero, in ``[0, 1]``, default
            ``0.01``; read only with ``activation="leaky_relu"``.

    Example:
        >>> import flowbridge as fb
        >>> net = fb.ResNetConditioner(blocks=0, channels=4, kernel_size=1)
        >>> coupling = fb.AffineCoupling(mask=fb.CheckerboardMask(), conditioner=net)
        >>> fb.param_count(fb.FlowSpec(event_shape=(2, 4, 4), layers=[coupling]))  # 2->4->4
        32
        >>> fb.ResNetConditioner(kernel_size=4)
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: kernel_size: expected an odd kernel size (same padding), got 4
    """

    model_config = _schema_description(
        """RealNVP's convolutional residual conditioner, for image events: a
        ``kernel_size`` convolution to ``channels`` feature maps, ``blocks`` residual blocks
        (activation, convolution, activation, convolution, added to the block's input), the
        activation, and a ``kernel_size`` convolution to the coupling's parameters, ordered
        ``[shift | raw log-scale]`` along channels. Convolutions are stride 1 with "same"
        zero padding; the last one starts at zero (the coupling starts as the identity).
        RealNVP also normalises inside its blocks; flowbridge's blocks hold no state."""
    )

    kind: Literal["resnet"] = "resnet"
    blocks: NonNegInt = 2
    channels: PosInt = 64
    kernel_size: Annotated[PosInt, AfterValidator(_odd)] = 3
    activation: Activation = "relu"
    negative_slope: Annotated[Finite, Field(ge=0, le=1)] = 0.01  # leaky_relu only

    def sizes(self, n_in: int, n_out: int) -> list[int]:
        """Channels in and out of each convolution, in order."""
        return [n_in, *[self.channels] * (2 * self.blocks + 1), n_out]


def _conditioner_kind(value: Any) -> str:
    """An MLP conditioner has no ``kind`` field (so specs written before the resnet
    existed keep their hash); a resnet says ``kind: resnet``."""
    if isinstance(value, dict):
        return "resnet" if value.get("kind") == "resnet" else "mlp"
    return "resnet" if isinstance(value, ResNetConditioner) else "mlp"


AnyConditioner = Annotated[
    Annotated[Conditioner, Tag("mlp")] | Annotated[ResNetConditioner, Tag("resnet")],
    Discriminator(_conditioner_kind),
]


class ContextEmbedding(Conditioner):
    """An MLP applied once to the context before the couplings (as sbi's embedding nets).

    ``features = e(c)``, dense layers ``context_dim -> *hidden -> features`` with the
    activation between them and none after the last, so with ``hidden=()`` it is a
    learned linear projection. Every coupling's conditioner then reads
    ``[x_a | features]``; its weights are ``context_embedding.{j}.kernel`` ``(in, out)``
    and ``.bias``, and every kernel (the last included) starts uniform in
    ``+-1/sqrt(fan_in)`` (the couplings' zero last layers already make the flow start
    as the identity; a zero last layer here would start every context alike). A flow
    with one needs ``context_dim > 0`` (:class:`flowbridge.FlowSpec`).

    Attributes:
        features: the size of the embedding, a positive integer (required); at most the
            ``event_size`` ceiling of :func:`flowbridge.limits`.
        hidden: the hidden-layer widths, positive integers, default ``(64,)``; at most
            ``depth`` layers of at most ``width`` units.
        activation: ``"relu"`` (default), ``"tanh"``, ``"leaky_relu"``, ``"elu"`` or
            ``"gelu"``.
        negative_slope: the slope of ``leaky_relu`` below zero, in ``[0, 1]``, default
            ``0.01``; read only with ``activation="leaky_relu"``.

    Example:
        >>> import flowbridge as fb
        >>> spec = fb.realnvp(4, num_couplings=1, hidden=(8,), context_dim=3,
        ...                   context_embedding={"features": 2, "hidden": []})
        >>> spec.context_features, fb.param_count(spec)  # 3->2, then (2 + 2)->8->4
        (2, 84)
        >>> fb.realnvp(4, context_embedding={"features": 2})
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: context_embedding: expected context_dim > 0 ...
    """

    model_config = _schema_description(
        """An MLP applied once to the context before the couplings (as sbi's embedding nets):
        ``features = e(c)``, dense layers ``context_dim -> *hidden -> features`` with the
        activation between them and none after the last, so with ``hidden=()`` it is a
        learned linear projection. Every coupling's conditioner then reads
        ``[x_a | features]``; its weights are ``context_embedding.{j}.kernel`` ``(in, out)``
        and ``.bias``, and every kernel (the last included) starts uniform in
        ``+-1/sqrt(fan_in)`` (the couplings' zero last layers already make the flow start
        as the identity; a zero last layer here would start every context alike)."""
    )

    features: PosInt
    hidden: tuple[PosInt, ...] = (64,)

    def param_count(self, context_dim: int) -> int:
        sizes = [context_dim, *self.hidden, self.features]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


# --------------------------------------------------------------------------- layers
#: Every layer type's model, in the order they are defined: a model registers itself by
#: being defined (a subclass of :class:`_LayerModel` whose ``type`` is a tag), and the
#: :data:`Layer` union, the schema's tags and the discriminator derive from this tuple.
LAYER_MODELS: list[type] = []


class _LayerModel(_Model):
    """A layer of the spec. Each layer type is one such model (plus its definition in
    :mod:`flowbridge.layers`, registered there with ``@definition(Model)``); what it must
    satisfy against the event, and how many weights it holds, it says itself, so nothing
    else in this package lists layer types. Defining the model registers it."""

    type: str  # each layer type narrows it to its tag; declared here so it comes first

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if typing.get_origin(cls.model_fields["type"].annotation) is Literal:
            LAYER_MODELS.append(cls)

    #: the event ranks the layer takes: 1 (vectors ``(D,)``), 3 (images ``(C, H, W)``)
    ranks: typing.ClassVar[tuple[int, ...]] = (1, 3)
    #: on images: whether the layer moves the whole tensor (a squeeze) rather than the
    #: channels still active (those not factored out; see :class:`FactorOut`)
    whole: typing.ClassVar[bool] = False
    #: the values the layer takes: "real", or "unit_interval" for a layer that reads
    #: data in (0, 1) and so must come first (:class:`Logit`)
    domain: typing.ClassVar[str] = "real"

    def active_after(self, active: int) -> int:
        """The number of active channels after the layer, given those before it."""
        return active

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        """``(path, message)`` for each rule the layer breaks on events of ``shape``
        (whose rank is one of :attr:`ranks`: the flow's checks see to it)."""
        return []

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The event shape the layer gives for events of ``shape``."""
        return shape

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        """The number of weights on events of ``shape`` (with a context of
        ``context_dim``), by arithmetic (nothing is allocated: the ceilings are checked
        with it before anything is built)."""
        return 0


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
            :class:`flowbridge.ClampScale`, :class:`flowbridge.SoftClampScale` or
            :class:`flowbridge.SigmoidScale`; a model or its dict with ``kind``.

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
            :class:`flowbridge.ClampScale`, :class:`flowbridge.SoftClampScale` or
            :class:`flowbridge.SigmoidScale`); a model or its dict with ``kind``.

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


class _Spline(_Model):
    """What the rational splines share: their bins, interval, minima and bin search."""

    kind: str  # each spline narrows it to its tag; declared here so it comes first
    bins: Annotated[PosInt, Field(ge=2, le=256)] = 8
    bound: _constant(1e-3, 1e6, positive=True) = 3.0
    min_bin_width: _constant(1e-8, 0.5, positive=True) = 1e-3
    min_bin_height: _constant(1e-8, 0.5, positive=True) = 1e-3
    min_derivative: _constant(1e-8, 0.5, positive=True) = 1e-3
    edge_derivative: Literal["one", "pyro"] = "one"
    eps: _constant(1e-12, 1e-2) = 0.0

    @field_validator("eps")
    @classmethod
    def _eps_not_negative(cls, value: float) -> float:
        if value < 0:
            raise PydanticCustomError("constant", "expected 0 or a number in [1e-12, 0.01], "
                                      "got {got}", {"got": value})
        return value

    @field_validator("min_bin_width", "min_bin_height")
    @classmethod
    def _bins_fit(cls, value: float, info: ValidationInfo) -> float:
        bins = info.data.get("bins")
        if bins is not None and bins * value >= 1.0:
            raise PydanticCustomError("constant", "expected a value below 1 / bins = {limit}, "
                                      "got {got}", {"limit": 1.0 / bins, "got": value})
        return value

    @property
    def per_entry(self) -> int:
        """Raw parameters per transformed entry: ``3K - 1`` (``4K - 1`` for the linear
        spline's extra ``lambda`` per bin)."""
        return 3 * self.bins - 1


class RationalQuadraticSpline(_Spline):
    """The rational-quadratic spline map of a neural spline flow (Durkan et al. 2019,
    arXiv:1906.04032), elementwise and monotonic, as Pyro's, TFP's and nflows' splines.

    Each transformed entry gets ``K = bins`` bins on ``[-B, B]`` (``B = bound``) from its
    raw parameters, ``3K - 1`` per entry: bin widths ``w = min_bin_width + (1 -
    min_bin_width * K) * softmax(u_w)``, heights likewise from ``u_h`` (the knots their
    running sums, scaled to ``[-B, B]``, the ends set to ``-B`` and ``B`` exactly), and the
    derivatives at the ``K - 1`` inner knots ``d = min_derivative + softplus(u_d + c)``
    with ``c = log(expm1(1 - min_derivative))``, so that a zero ``u_d`` gives ``d = 1``:
    with zero raw parameters (a conditioner whose last layer starts at zero) the spline is
    the identity. Outside ``[-B, B]`` the map is the identity (linear tails), log-det 0;
    inputs there are replaced by ``-B`` before the spline's formula, so gradients stay
    finite. The bin of ``x`` is ``sum(x >= knots + eps) - 1``, clamped into ``[0, K - 1]``
    (Pyro's search, with its ``eps`` an option). The inverse solves the bin's quadratic by its stable root
    ``2c / (-b - sqrt(b^2 - 4ac))``.

    The conditioner's output layout, for ``n`` transformed entries, is parameter-major
    (Pyro's): ``[u_w (n * K) | u_h (n * K) | u_d (n * (K - 1))]``, each block
    entry-major (entry ``i``'s bins at ``i * K ... i * K + K - 1``).

    Attributes:
        kind: ``"rational_quadratic"``, the tag that picks this map in a spec's dict.
        bins: ``K``, the number of bins; default 8.
        bound: ``B``, the half-width of the interval; default 3.0.
        min_bin_width: the smallest bin width, as a fraction of ``2B``; default 1e-3,
            below ``1 / bins``.
        min_bin_height: the smallest bin height, likewise; default 1e-3.
        min_derivative: the smallest derivative at a knot; default 1e-3.
        edge_derivative: the derivative at ``-B`` and ``B``: ``"one"`` (1, the default, as
            TFP and nflows/sbi: the spline joins the identity tails smoothly) or
            ``"pyro"`` (``1 - min_derivative``, Pyro's padding).
        eps: the bin search's epsilon (added to the knots): 0 (the default), so the
            forward and the inverse put a point and its image in the same bin and the
            inverse returns the point; Pyro's 1e-6 (set by
            :func:`flowbridge.from_pyro_native`) puts inputs less than ``eps`` above a
            knot in the bin below, where its inverse, searching the image among the
            heights, may not (round trips off by 4e-8 and log-dets by 7e-3 in
            ``tests/test_splines.py``; by up to 1.5e-7 and 0.09 over 1e5 random inputs).

    Example:
        >>> import flowbridge as fb
        >>> fb.RationalQuadraticSpline(bins=4).bins
        4
        >>> fb.RationalQuadraticSpline(bins=200, min_bin_width=0.01)
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: min_bin_width: expected a value below 1 / bins = 0.005, got 0.01
    """

    model_config = _schema_description(
        """A monotonic rational-quadratic spline (arXiv:1906.04032) with ``bins`` bins on
        ``[-bound, bound]``, identity tails; ``3 * bins - 1`` raw parameters per entry."""
    )

    kind: Literal["rational_quadratic"] = "rational_quadratic"


class RationalLinearSpline(_Spline):
    """The rational-linear spline map (Dolatabadi et al. 2020, arXiv:2001.05168): Pyro's
    ``Spline(order="linear")``, its default.

    Bins, knots, derivatives, tails and the bin search as
    :class:`flowbridge.RationalQuadraticSpline`; each bin is two rational-linear pieces
    that meet at ``lambda_k * w_k`` into the bin, with ``lambda = min_lambda + (1 - 2 *
    min_lambda) * sigmoid(u_l)`` from a fourth raw parameter per bin (a zero ``u_l`` gives
    0.5, and zero raw parameters the identity). With ``w_b = sqrt(d_k / d_{k+1})``,
    ``w_c = (lambda d_k + (1 - lambda) w_b d_{k+1}) / delta_k`` and the junction height
    ``y_c = ((1 - lambda) y_k + lambda w_b y_{k+1}) / ((1 - lambda) + lambda w_b)``, the
    forward at ``theta = (x - x_k) / w_k`` is ``(y_k (lambda - theta) + w_c y_c theta) /
    ((lambda - theta) + w_c theta)`` for ``theta <= lambda``, else ``(w_c y_c (1 - theta)
    + w_b y_{k+1} (theta - lambda)) / (w_c (1 - theta) + w_b (theta - lambda))``; the
    inverse is the same kind of ratio in ``y`` (no root to take). Each piece is picked
    before its division, so the other piece's denominator never reaches a value or a
    gradient.

    The conditioner's output layout: ``[u_w (n * K) | u_h (n * K) | u_d (n * (K - 1)) |
    u_l (n * K)]``, parameter-major, each block entry-major (Pyro's).

    Attributes:
        kind: ``"rational_linear"``, the tag that picks this map in a spec's dict.
        bins: ``K``, the number of bins; default 8.
        bound: ``B``, the half-width of the interval; default 3.0.
        min_bin_width: the smallest bin width, as a fraction of ``2B``; default 1e-3.
        min_bin_height: the smallest bin height, likewise; default 1e-3.
        min_derivative: the smallest derivative at a knot; default 1e-3.
        edge_derivative: ``"one"`` (default) or ``"pyro"``, as
            :class:`flowbridge.RationalQuadraticSpline`'s.
        eps: the bin search's epsilon, as :class:`flowbridge.RationalQuadraticSpline`'s;
            default 0.
        min_lambda: the smallest ``lambda`` (and ``1 -`` the largest); default 0.025
            (Pyro's).

    Example:
        >>> import flowbridge as fb
        >>> spline = fb.RationalLinearSpline(bins=4, edge_derivative="pyro")
        >>> spline.per_entry  # 4 raw parameters per bin, less one derivative
        15
    """

    model_config = _schema_description(
        """A monotonic rational-linear spline (arXiv:2001.05168; Pyro's default spline) with
        ``bins`` bins on ``[-bound, bound]``, identity tails; ``4 * bins - 1`` raw parameters
        per entry."""
    )

    kind: Literal["rational_linear"] = "rational_linear"
    min_lambda: _constant(1e-6, 0.49, positive=True) = 0.025

    @property
    def per_entry(self) -> int:
        """Raw parameters per transformed entry: ``4K - 1``."""
        return 4 * self.bins - 1


def _spline_kind(value: Any) -> str | None:
    """A spline's ``kind``; a dict without one is the rational-quadratic spline."""
    if isinstance(value, dict):
        return value.get("kind", "rational_quadratic")
    return getattr(value, "kind", None)


#: The spline maps a spline layer takes, by their ``kind`` (``rational_quadratic`` where a
#: dict leaves it out).
SplineMap = Annotated[
    Annotated[RationalQuadraticSpline, Tag("rational_quadratic")]
    | Annotated[RationalLinearSpline, Tag("rational_linear")],
    Discriminator(_spline_kind),
]


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


class Scaling(_LayerModel):
    """NICE's diagonal scaling layer (Dinh et al. 2015, arXiv:1410.8516, sec. 3.3).

    ``y = x * exp(s)`` with a learned vector ``s`` (the weight ``log_scale``, one entry
    per event entry, shaped as the event it acts on; it starts at zero, the identity):

    - forward: ``y = x * exp(s)``, log-det ``sum(s)``;
    - inverse: ``x = y * exp(-s)``, log-det ``-sum(s)``.

    Attributes:
        type: ``"scaling"``, the tag that picks this layer in a spec's dict (a dict must
            give it; the constructor fills it in).

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.FlowSpec.from_dict({"event_shape": [3], "layers": [{"type": "scaling"}]})
        >>> flow = fb.to_numpy(spec, {"layers.0.log_scale": np.log([1.0, 2.0, 4.0])})
        >>> y, log_det = flow.forward_with_log_det(np.ones((1, 3)))
        >>> y, np.allclose(log_det, np.log(8.0))
        (array([[1., 2., 4.]]), True)
    """

    model_config = _schema_description(
        "NICE's diagonal scaling layer: ``y = x * exp(s)`` with a learned vector ``s``."
    )

    type: Literal["scaling"] = "scaling"

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        return math.prod(shape)


class Permutation(_LayerModel):
    """A fixed permutation of a vector event's entries, ``y = x[..., indices]``.

    ``reverse``, ``random`` (``seed`` drawn with
    ``numpy.random.default_rng(seed).permutation(D)``) or ``explicit`` (``indices``). It
    takes vector events ``(D,)`` only and holds no weights:

    - forward: ``y[..., i] = x[..., indices[i]]``, log-det 0;
    - inverse: ``x = y[..., inverse_indices]`` (``indices`` inverted), log-det 0.

    Attributes:
        type: ``"permutation"``, the tag that picks this layer in a spec's dict (a dict
            must give it; the constructor fills it in).
        kind: ``"reverse"`` (default), ``"random"`` or ``"explicit"``.
        seed: a non-negative integer, required with ``kind="random"`` and refused
            otherwise; default ``None``.
        indices: a permutation of ``0..D-1``, required with ``kind="explicit"`` and
            refused otherwise; default ``None``.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> layer = fb.Permutation(kind="explicit", indices=(2, 0, 1))
        >>> flow = fb.to_numpy(fb.FlowSpec(event_shape=(3,), layers=[layer]))
        >>> flow.forward(np.array([10.0, 20.0, 30.0]))
        array([30., 10., 20.])
        >>> fb.FlowSpec(event_shape=(3,), layers=[fb.Permutation(kind="random")])
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0].seed: expected a non-negative integer ..., got None
    """

    model_config = _schema_description(
        """A fixed permutation ``y = x[..., indices]``: ``reverse``, ``random`` (``seed``
        drawn with ``numpy.random.default_rng(seed).permutation(D)``) or ``explicit``."""
    )

    type: Literal["permutation"] = "permutation"
    kind: Literal["reverse", "random", "explicit"] = "reverse"
    seed: NonNegInt | None = None
    indices: tuple[NonNegInt, ...] | None = None
    ranks: typing.ClassVar[tuple[int, ...]] = (1,)

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        (dim,) = shape
        if self.kind == "random" and self.seed is None:
            return [(f"{at}.seed", "expected a non-negative integer for kind 'random', got None")]
        if self.kind != "random" and self.seed is not None:
            return [(f"{at}.seed", f"expected no seed for kind {self.kind!r}, got {self.seed}")]
        if self.kind == "explicit":
            if self.indices is None:
                return [(f"{at}.indices", "expected a permutation of range(D) for kind "
                         "'explicit', got None")]  # fmt: skip
            if sorted(self.indices) != list(range(dim)):
                return [(f"{at}.indices", f"expected a permutation of 0..{dim - 1}, got "
                         f"{_show(list(self.indices))}")]  # fmt: skip
        elif self.indices is not None:
            return [(f"{at}.indices", f"expected no indices for kind {self.kind!r}")]
        return []


class Squeeze(_LayerModel):
    """RealNVP's squeeze (Dinh et al. 2017, arXiv:1605.08803), 2x2 space-to-depth on images.

    It takes image events ``(C, H, W)`` with an even height and width to
    ``(4C, H/2, W/2)``, moving the whole tensor (channels factored out before it too):

    - forward: ``y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]`` (each channel's 2x2 blocks
      become four consecutive channels, row-major within the block; torch's
      ``pixel_unshuffle`` order), log-det 0;
    - inverse: the matching depth-to-space, log-det 0.

    Attributes:
        type: ``"squeeze"``, the tag that picks this layer in a spec's dict (a dict must
            give it; the constructor fills it in).

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.FlowSpec(event_shape=(1, 4, 4), layers=[fb.Squeeze()])
        >>> y = fb.to_numpy(spec).forward(np.arange(16.0).reshape(1, 1, 4, 4))
        >>> spec.output_shape, y[0, :, 0, 0]  # x[0, 0, 0], x[0, 0, 1], x[0, 1, 0], x[0, 1, 1]
        ((4, 2, 2), array([0., 1., 4., 5.]))
        >>> fb.FlowSpec(event_shape=(1, 3, 4), layers=[fb.Squeeze()])
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0]: expected an even height and width to squeeze, ...
    """

    model_config = _schema_description(
        """RealNVP's squeeze, 2x2 space-to-depth on image events: ``(C, H, W)`` to
        ``(4C, H/2, W/2)`` with ``y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]`` (each
        channel's 2x2 blocks become four consecutive channels, row-major within the block;
        torch's ``pixel_unshuffle`` order), log-det 0."""
    )

    type: Literal["squeeze"] = "squeeze"
    ranks: typing.ClassVar[tuple[int, ...]] = (3,)
    whole: typing.ClassVar[bool] = True

    def active_after(self, active: int) -> int:
        return 4 * active  # channel c's four children are 4c .. 4c + 3: still the first

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        if shape[1] % 2 or shape[2] % 2:
            return [(at, f"expected an even height and width to squeeze, got events of "
                     f"shape {shape}")]  # fmt: skip
        return []

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = shape
        return (4 * c, h // 2, w // 2)


class FactorOut(_LayerModel):
    """RealNVP's multi-scale factor-out (Dinh et al. 2017, arXiv:1605.08803, sec. 3.6).

    Of the ``A`` channels of an image event still active, the last ``A - floor(A / 2)``
    leave the flow and pass to the output unchanged; every later layer but a squeeze acts
    on the first ``floor(A / 2)``. An identity map, log-det 0 (forward ``y = x``, inverse
    ``x = y``): what it changes is what the layers after it see. It needs at least 2
    active channels.

    Output layout: the flow keeps one tensor. Factored channels stay where they are,
    after the active ones; a later squeeze moves every channel alike (channel ``c``'s four
    children are ``4c .. 4c + 3``), so the active channels stay first and each factored
    block is squeezed with the rest, a fixed permutation of latent coordinates (log-det
    0) that RealNVP's separate outputs do not make; with an i.i.d. base density the
    density of every image is the same. The flow's output holds the last scale's latent
    in its first channels, then the factored blocks, latest first.

    Attributes:
        type: ``"factor_out"``, the tag that picks this layer in a spec's dict (a dict
            must give it; the constructor fills it in).

    Example:
        >>> import flowbridge as fb
        >>> spec = fb.FlowSpec(event_shape=(1, 4, 4),
        ...                    layers=[fb.Squeeze(), fb.FactorOut(), fb.ActNorm()])
        >>> spec.output_shape, fb.param_count(spec)  # the ActNorm sees 2 of the 4 channels
        ((4, 2, 2), 4)
        >>> fb.FlowSpec(event_shape=(1, 4, 4), layers=[fb.FactorOut()])
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0]: expected at least 2 active channels ..., got 1
    """

    model_config = _schema_description(
        """RealNVP's multi-scale factor-out (Dinh et al. 2017, sec. 3.6): of the ``A``
        channels still active, the last ``A - floor(A / 2)`` leave the flow and pass to the
        output unchanged; every later layer but a squeeze acts on the first ``floor(A / 2)``.
        An identity map, log-det 0: what it changes is what the layers after it see.

        Output layout: the flow keeps one tensor. Factored channels stay where they are,
        after the active ones; a later squeeze moves every channel alike (channel ``c``'s four
        children are ``4c .. 4c + 3``), so the active channels stay first and each factored
        block is squeezed with the rest, a fixed permutation of latent coordinates (log-det
        0) that RealNVP's separate outputs do not make; with an i.i.d. base density the
        density of every image is the same. The flow's output holds the last scale's latent
        in its first channels, then the factored blocks, latest first."""
    )

    type: Literal["factor_out"] = "factor_out"
    ranks: typing.ClassVar[tuple[int, ...]] = (3,)

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        if shape[0] < 2:
            return [(at, f"expected at least 2 active channels to factor half out, got "
                     f"{shape[0]}")]  # fmt: skip
        return []

    def active_after(self, active: int) -> int:
        return active // 2


class ActNorm(_LayerModel):
    """Glow's activation normalization (Kingma & Dhariwal 2018, arXiv:1807.03039).

    An affine map per channel of an image (``log_scale``, ``shift`` of shape ``(C,)``,
    broadcast over H and W) or per entry of a vector (shape ``(D,)``):

    - forward: ``y = x * exp(log_scale) + shift``, log-det ``H * W * sum(log_scale)``
      (``sum(log_scale)`` for vectors);
    - inverse: ``x = (y - shift) * exp(-log_scale)``, log-det ``-H * W * sum(log_scale)``.

    Both start at zero (the identity); Glow's data-dependent initialisation is an
    explicit step, :func:`flowbridge.actnorm_init`, which sets them so that the layer's
    output over a batch has zero mean and unit variance per channel.

    Attributes:
        type: ``"actnorm"``, the tag that picks this layer in a spec's dict (a dict must
            give it; the constructor fills it in).

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> layers = [{"type": "actnorm"}]
        >>> spec = fb.FlowSpec.from_dict({"event_shape": [2, 1, 1], "layers": layers})
        >>> params = {"layers.0.log_scale": np.log([2.0, 4.0]),
        ...           "layers.0.shift": np.array([1.0, -1.0])}
        >>> y, log_det = fb.to_numpy(spec, params).forward_with_log_det(np.ones((1, 2, 1, 1)))
        >>> y.ravel(), np.allclose(log_det, np.log(8.0))
        (array([3., 3.]), True)
    """

    model_config = _schema_description(
        """Glow's activation normalization (Kingma & Dhariwal 2018): ``y = x * exp(log_scale)
        + shift`` per channel of an image (``log_scale``, ``shift`` of shape ``(C,)``) or per
        entry of a vector; log-det ``H * W * sum(log_scale)`` (``sum(log_scale)`` for
        vectors). Both start at zero (the identity); Glow's data-dependent initialisation is
        an explicit step, :func:`flowbridge.actnorm_init`, which sets them so that the
        layer's output over a batch has zero mean and unit variance per channel."""
    )

    type: Literal["actnorm"] = "actnorm"

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        return 2 * shape[0]


class BatchNorm(_LayerModel):
    """Batch normalization as a flow layer (Dinh et al. 2017, arXiv:1605.08803, sec. 3.7).

    As TFP's ``BatchNormalization`` bijector, per channel of an image (per entry of a
    vector), in the data-to-latent direction:

    - forward: ``y = (x - mean) / sqrt(var + eps) * exp(log_gamma) + beta``, log-det
      ``H * W * sum(log_gamma - log(var + eps) / 2)`` (without ``H * W`` for vectors);
    - inverse: ``x = (y - beta) * exp(-log_gamma) * sqrt(var + eps) + mean`` with the
      running averages, log-det the forward's negated.

    Training mode (Pyro's ``module.train()``; TFP's and NumPy's ``layer.training = True``,
    the default in all three, as a torch module's) takes ``mean`` and the biased ``var``
    of the batch, over every batch dimension and H and W, and moves the running averages:
    ``running = (1 - momentum) * running + momentum * batch`` (torch's convention; a
    Keras momentum ``m`` is ``1 - m`` here). Evaluation mode uses the running averages.
    The inverse always uses the running averages (it has no batch of ``x`` to measure),
    so it inverts the evaluation-mode forward exactly. The per-example log-det holds the
    batch statistics constant, as RealNVP and TFP do. State: ``running_mean`` and
    ``running_log_var`` (the log of the running variance, so both start at zero: mean 0,
    variance 1) are neutral parameters too, so they move between backends; they are
    buffers in Pyro and non-trainable variables in TFP. With ``log_gamma`` and ``beta``
    that is 4 weights per channel (per entry of a vector).

    Attributes:
        type: ``"batch_norm"``, the tag that picks this layer in a spec's dict (a dict
            must give it; the constructor fills it in).
        momentum: the running averages' update weight, a number in
            ``[1.175494e-38, 1]``, default ``0.1``.
        eps: added to the variance, a number in ``[1.175494e-38, 1]``, default ``1e-5``.

    Example:
        >>> import flowbridge as fb
        >>> layers = [{"type": "batch_norm", "momentum": 0.01}]
        >>> fb.param_count(fb.FlowSpec.from_dict({"event_shape": [3, 8, 8], "layers": layers}))
        12
        >>> fb.BatchNorm(momentum=0.0)
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: momentum: expected a number in [1.175494e-38, 1], got 0.0
    """

    model_config = _schema_description(
        """Batch normalization as a flow layer (Dinh et al. 2017, sec. 3.7; TFP's
        ``BatchNormalization`` bijector), per channel of an image (per entry of a vector),
        in the data-to-latent direction: ``y = (x - mean) / sqrt(var + eps) *
        exp(log_gamma) + beta``, log-det ``H * W * sum(log_gamma - log(var + eps) / 2)``.

        Training mode (Pyro's ``module.train()``; TFP's and NumPy's ``layer.training = True``,
        the default in all three, as a torch module's) takes ``mean`` and the biased ``var``
        of the batch, over every batch dimension and H and W, and moves the running averages:
        ``running = (1 - momentum) * running + momentum * batch`` (torch's convention; a
        Keras momentum ``m`` is ``1 - m`` here). Evaluation mode uses the running averages.
        The inverse always uses the running averages (it has no batch of ``x`` to measure),
        so it inverts the evaluation-mode forward exactly. The per-example log-det holds the
        batch statistics constant, as RealNVP and TFP do. State: ``running_mean`` and
        ``running_log_var`` (the log of the running variance, so both start at zero: mean 0,
        variance 1) are neutral parameters too, so they move between backends; they are
        buffers in Pyro and non-trainable variables in TFP."""
    )

    type: Literal["batch_norm"] = "batch_norm"
    momentum: _constant(F32_TINY, 1.0, positive=True) = 0.1
    eps: _constant(F32_TINY, 1.0, positive=True) = 1e-5

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        return 4 * shape[0]  # log_gamma, beta and the two running averages


class Logit(_LayerModel):
    """RealNVP's logit preprocessing (Dinh et al. 2017, arXiv:1605.08803, sec. 4.1).

    The first layer of a flow on data in (0, 1) (dequantized pixels,
    :func:`flowbridge.dequantize`); the flow refuses it anywhere else. ``alpha`` (the
    paper's 0.05) keeps ``p`` away from 0 and 1:

    - forward: ``y = logit(p)``, ``p = alpha + (1 - 2 alpha) x``, log-det
      ``sum(log(1 - 2 alpha) - log(p) - log(1 - p))``;
    - inverse: ``x = (sigmoid(y) - alpha) / (1 - 2 alpha)``, log-det the forward's
      negated.

    Attributes:
        type: ``"logit"``, the tag that picks this layer in a spec's dict (a dict must
            give it; the constructor fills it in).
        alpha: a number in ``[1.175494e-38, 0.49]``, default ``0.05``.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> flow = fb.to_numpy(fb.FlowSpec(event_shape=(1,), layers=[fb.Logit()]))
        >>> y, log_det = flow.forward_with_log_det(np.array([[0.5]]))  # p = 0.5
        >>> y, np.allclose(log_det, np.log(0.9 / 0.25))
        (array([[0.]]), True)
        >>> fb.FlowSpec(event_shape=(1,), layers=[fb.Scaling(), fb.Logit()])
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[1]: expected a logit layer first ... at position 1
    """

    model_config = _schema_description(
        """RealNVP's logit preprocessing (Dinh et al. 2017, sec. 4.1), the first layer of a
        flow on data in (0, 1) (dequantized pixels, :func:`flowbridge.dequantize`):
        ``y = logit(p)``, ``p = alpha + (1 - 2 alpha) x``, log-det
        ``sum(log(1 - 2 alpha) - log(p) - log(1 - p))``; inverse
        ``x = (sigmoid(y) - alpha) / (1 - 2 alpha)``. ``alpha`` (the paper's 0.05) keeps
        ``p`` away from 0 and 1."""
    )

    type: Literal["logit"] = "logit"
    alpha: _constant(F32_TINY, 0.49, positive=True) = 0.05
    domain: typing.ClassVar[str] = "unit_interval"  # its input: data in (0, 1)


Layer = Annotated[typing.Union[tuple(LAYER_MODELS)], Field(discriminator="type")]  # noqa: UP007


def _tags(union: Any, discriminator: str) -> set[str]:
    """The discriminator values of a tagged union (``"affine_coupling"``, ``"clamp"``)."""
    models = typing.get_args(typing.get_args(union)[0])
    return {tag for m in models for tag in typing.get_args(m.model_fields[discriminator].annotation)}


#: Branch names that pydantic puts in error locations (``layers.0.affine_coupling.mask``).
TAGS = (_tags(Layer, "type") | _tags(Mask, "kind") | _tags(ScaleMap, "kind")
        | _tags(SplineMap, "kind") | {"mlp", "resnet"})  # fmt: skip


# ------------------------------------------------------------------ derived structure
def mask_indices(mask, dim: int) -> tuple[list[int], list[int]]:
    """``(passed, transformed)`` event indices of a mask, each in increasing order."""
    if mask.kind in ("half", "split"):
        k = _mask_sizes(mask, dim)[0]
        passed = list(range(k)) if mask.part == "first" else list(range(dim - k, dim))
    elif mask.kind == "parity":
        passed = list(range(0 if mask.parity == "even" else 1, dim, 2))
    else:
        passed = [i for i, v in enumerate(mask.values) if v]
    chosen = set(passed)
    return passed, [i for i in range(dim) if i not in chosen]


def permutation_indices(layer: Permutation, dim: int) -> list[int]:
    """The permutation as explicit indices: ``y[..., i] = x[..., indices[i]]``."""
    if layer.kind == "reverse":
        return list(range(dim - 1, -1, -1))
    if layer.kind == "random":
        return [int(i) for i in np.random.default_rng(layer.seed).permutation(dim)]
    return list(layer.indices)


def _image_mask_channels(mask: Any, shape: tuple[int, ...]) -> tuple[int, int]:
    """``(channels in, channels out per parameter)`` of an image coupling's conditioner:
    a checkerboard's reads and writes every channel, a channel mask's reads the passed
    half and writes the transformed half."""
    c = shape[0]
    if mask.kind == "checkerboard":
        return c, c
    return c // 2, c - c // 2


def _mask_sizes(mask: Any, dim: int) -> tuple[int, int]:
    """``(passed, transformed)`` counts of a mask, computed without building index lists."""
    if mask.kind == "half":
        k = dim // 2 if mask.rounding == "floor" else (dim + 1) // 2
    elif mask.kind == "split":
        k = min(mask.size, dim)
    elif mask.kind == "parity":
        k = (dim + 1) // 2 if mask.parity == "even" else dim // 2
    else:
        k = sum(mask.values)
    return k, dim - k
