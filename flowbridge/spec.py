"""The backend-neutral flow specification: validated, frozen, saved as JSON or YAML.

A :class:`FlowSpec` is data. Nothing in it ever reaches generated code as code: numbers
are validated and written as literals, strings only inside ``repr``-quoted constants.

Layers apply in list order: ``y = layers[-1](...layers[1](layers[0](x)))``.

Masks say which event entries *pass through* a coupling unchanged (they feed the
conditioner); the others are transformed. ``half`` passes the first or last part, whose
size is ``floor(D / 2)`` (``rounding="floor"``, Pyro's ``split_dim = D // 2``) or
``ceil(D / 2)``; ``split`` the first or last ``size`` entries (TFP's ``num_masked``);
``parity`` passes the even or odd indices; ``explicit`` gives one
boolean per entry, ``true`` = passes through.
"""

from __future__ import annotations

import hashlib
import json
import math
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
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
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from . import document
from .document import show as _show
from .errors import SpecError
from .files import write_atomic
from .limits import F32_MAX, F32_TINY, MAX_INT, current, memory

FORMAT_VERSION = 1


def _integral(value: Any) -> Any:
    """JSON has one number type: ``4.0`` is the integer 4 (as JSON Schema says)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_INT:
        return int(value)
    return value


Int = Annotated[StrictInt, BeforeValidator(_integral), Field(le=MAX_INT)]
PosInt = Annotated[Int, Field(gt=0)]
NonNegInt = Annotated[Int, Field(ge=0)]
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
            raise _spec_error(exc) from None


# ----------------------------------------------------------------------------- masks
class HalfMask(_Model):
    """Pass the first or last part of the event through; the rest is transformed."""

    kind: Literal["half"] = "half"
    part: Literal["first", "last"] = "first"
    rounding: Literal["floor", "ceil"] = "floor"


class SplitMask(_Model):
    """Pass the first or last ``size`` entries through (TFP's ``num_masked``; a negative
    ``num_masked`` is ``part="last"``)."""

    kind: Literal["split"] = "split"
    part: Literal["first", "last"] = "first"
    size: PosInt


class ParityMask(_Model):
    """Pass the even (0, 2, ...) or odd indices through."""

    kind: Literal["parity"] = "parity"
    parity: Literal["even", "odd"] = "even"


class ExplicitMask(_Model):
    """One boolean per event entry; ``true`` passes through."""

    kind: Literal["explicit"] = "explicit"
    values: tuple[StrictBool, ...]


class CheckerboardMask(_Model):
    """Image events ``(C, H, W)``: pass the entries at ``(c, h, w)`` with ``(h + w) % 2``
    equal to 0 (``even``) or 1 (``odd``), in every channel alike (RealNVP's spatial
    checkerboard). The conditioner reads the whole image with the transformed entries
    zeroed, and its outputs at the passed entries are ignored."""

    kind: Literal["checkerboard"] = "checkerboard"
    parity: Literal["even", "odd"] = "even"


class ChannelMask(_Model):
    """Image events ``(C, H, W)``: pass the first or last ``floor(C / 2)`` channels
    (RealNVP's channel-wise mask); the other channels are transformed."""

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
    """``scale = exp(s)``, log-scale ``s`` (RealNVP, TFP's ``RealNVP``)."""

    kind: Literal["exp"] = "exp"


class ClampScale(_Model):
    """``scale = exp(clamp(s, low, high))``, gradient passed straight through the clamp
    (Pyro's ``AffineCoupling`` with ``log_scale_min_clip=-5``, ``log_scale_max_clip=3``)."""

    kind: Literal["clamp"] = "clamp"
    low: Finite = -5.0
    high: Finite = 3.0


class SoftClampScale(_Model):
    """``scale = exp(c * tanh(s / c))`` with ``c = bound``: a smooth clamp to (-c, c)."""

    kind: Literal["soft_clamp"] = "soft_clamp"
    # 1 / bound is written into the code too, so both must be float32 normals
    bound: _constant(F32_TINY, 1.0 / F32_TINY, positive=True) = 3.0


class SigmoidScale(_Model):
    """Glow's ``scale = sigmoid(s + offset)`` (offset 2), log-scale ``log_sigmoid(s + 2)``.

    flowbridge keeps RealNVP's order ``y = x * scale + shift`` for every scale map; Glow's
    code adds the shift before scaling, which is the same family under another weighting.
    """

    kind: Literal["sigmoid"] = "sigmoid"
    offset: Finite = 2.0


ScaleMap = Annotated[
    ExpScale | ClampScale | SoftClampScale | SigmoidScale, Field(discriminator="kind")
]


class Conditioner(_Model):
    """The MLP that maps the passed-through entries to the coupling's parameters.

    ``hidden`` lists hidden-layer widths (empty: a single affine map). The output layer
    has ``n_trans`` units for an additive coupling and ``2 * n_trans`` for an affine one,
    ordered ``[shift | raw log-scale]``.
    """

    hidden: tuple[PosInt, ...] = (64, 64)
    activation: Activation = "relu"
    negative_slope: Annotated[Finite, Field(ge=0, le=1)] = 0.01  # leaky_relu only


def _odd(value: int) -> int:
    if value % 2 != 1:
        raise PydanticCustomError("constant", "expected an odd kernel size (same padding), "
                                  "got {got}", {"got": value})  # fmt: skip
    return value


class ResNetConditioner(_Model):
    """RealNVP's convolutional residual conditioner, for image events: a
    ``kernel_size`` convolution to ``channels`` feature maps, ``blocks`` residual blocks
    (activation, convolution, activation, convolution, added to the block's input), the
    activation, and a ``kernel_size`` convolution to the coupling's parameters, ordered
    ``[shift | raw log-scale]`` along channels. Convolutions are stride 1 with "same"
    zero padding; the last one starts at zero (the coupling starts as the identity).
    RealNVP also normalises inside its blocks; flowbridge's blocks hold no state."""

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
    """An MLP applied once to the context before the couplings (as sbi's embedding nets):
    ``features = e(c)``, dense layers ``context_dim -> *hidden -> features`` with the
    activation between them and none after the last, so with ``hidden=()`` it is a
    learned linear projection. Every coupling's conditioner then reads
    ``[x_a | features]``; its weights are ``context_embedding.{j}.kernel`` ``(in, out)``
    and ``.bias``, and every kernel (the last included) starts uniform in
    ``+-1/sqrt(fan_in)`` (the couplings' zero last layers already make the flow start
    as the identity; a zero last layer here would start every context alike)."""

    features: PosInt
    hidden: tuple[PosInt, ...] = (64,)

    def param_count(self, context_dim: int) -> int:
        sizes = [context_dim, *self.hidden, self.features]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


# --------------------------------------------------------------------------- layers
class _LayerModel(_Model):
    """A layer of the spec. Each layer type is one such model (plus its definition in
    :mod:`flowbridge.layers`); what it must satisfy against the event, and how many
    weights it holds, it says itself, so nothing else in this module lists layer types."""

    type: str  # each layer type narrows it to its tag; declared here so it comes first

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
        (whose rank is one of :attr:`ranks`: :func:`_check_against_event` sees to it)."""
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
    _per_entry = 1  # conditioner outputs per transformed entry

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
            sizes, taps = cond.sizes(n_in, n_out * self._per_entry), cond.kernel_size**2
            return sum(a * b * taps + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
        passed, trans = _mask_sizes(self.mask, shape[0])
        sizes = [passed + context_dim, *cond.hidden, trans * self._per_entry]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


class AdditiveCoupling(_Coupling):
    """NICE additive coupling (arXiv:1410.8516): ``y_b = x_b + m(x_a)``, log-det 0."""

    type: Literal["additive_coupling"] = "additive_coupling"


class AffineCoupling(_Coupling):
    """RealNVP affine coupling (arXiv:1605.08803):
    ``y_b = x_b * scale(s(x_a)) + t(x_a)``, log-det ``sum(log scale)``."""

    type: Literal["affine_coupling"] = "affine_coupling"
    scale: ScaleMap = Field(default_factory=ExpScale)
    _per_entry = 2  # [shift | raw log-scale]

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        errors = super().check(shape, at)
        if errors and errors[0][0] != f"{at}.mask":  # a mask that does not fit the event
            return errors
        if self.scale.kind == "clamp" and not self.scale.low < self.scale.high:
            errors.append((f"{at}.scale.high", f"expected a value > low ({self.scale.low}), "
                           f"got {self.scale.high}"))  # fmt: skip
        return errors


class Scaling(_LayerModel):
    """NICE's diagonal scaling layer: ``y = x * exp(s)`` with a learned vector ``s``."""

    type: Literal["scaling"] = "scaling"

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        return math.prod(shape)


class Permutation(_LayerModel):
    """A fixed permutation ``y = x[..., indices]``: ``reverse``, ``random`` (``seed``
    drawn with ``numpy.random.default_rng(seed).permutation(D)``) or ``explicit``."""

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
    """RealNVP's squeeze, 2x2 space-to-depth on image events: ``(C, H, W)`` to
    ``(4C, H/2, W/2)`` with ``y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]`` (each
    channel's 2x2 blocks become four consecutive channels, row-major within the block;
    torch's ``pixel_unshuffle`` order), log-det 0."""

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


class ActNorm(_LayerModel):
    """Glow's activation normalization (Kingma & Dhariwal 2018): ``y = x * exp(log_scale)
    + shift`` per channel of an image (``log_scale``, ``shift`` of shape ``(C,)``) or per
    entry of a vector; log-det ``H * W * sum(log_scale)`` (``sum(log_scale)`` for
    vectors). Both start at zero (the identity); Glow's data-dependent initialisation is
    an explicit step, :func:`flowbridge.actnorm_init`, which sets them so that the
    layer's output over a batch has zero mean and unit variance per channel."""

    type: Literal["actnorm"] = "actnorm"

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        return 2 * shape[0]


class BatchNorm(_LayerModel):
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

    type: Literal["batch_norm"] = "batch_norm"
    momentum: _constant(F32_TINY, 1.0, positive=True) = 0.1
    eps: _constant(F32_TINY, 1.0, positive=True) = 1e-5

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        return 4 * shape[0]  # log_gamma, beta and the two running averages


class Logit(_LayerModel):
    """RealNVP's logit preprocessing (Dinh et al. 2017, sec. 4.1), the first layer of a
    flow on data in (0, 1) (dequantized pixels, :func:`flowbridge.dequantize`):
    ``y = logit(p)``, ``p = alpha + (1 - 2 alpha) x``, log-det
    ``sum(log(1 - 2 alpha) - log(p) - log(1 - p))``; inverse
    ``x = (sigmoid(y) - alpha) / (1 - 2 alpha)``. ``alpha`` (the paper's 0.05) keeps
    ``p`` away from 0 and 1."""

    type: Literal["logit"] = "logit"
    alpha: _constant(F32_TINY, 0.49, positive=True) = 0.05
    domain: typing.ClassVar[str] = "unit_interval"  # its input: data in (0, 1)


class FactorOut(_LayerModel):
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

    type: Literal["factor_out"] = "factor_out"
    ranks: typing.ClassVar[tuple[int, ...]] = (3,)

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        if shape[0] < 2:
            return [(at, f"expected at least 2 active channels to factor half out, got "
                     f"{shape[0]}")]  # fmt: skip
        return []

    def active_after(self, active: int) -> int:
        return active // 2


Layer = Annotated[
    AdditiveCoupling | AffineCoupling | Scaling | Permutation | Squeeze | FactorOut | ActNorm
    | BatchNorm | Logit,
    Field(discriminator="type"),
]


def _tags(union: Any, discriminator: str) -> set[str]:
    """The discriminator values of a tagged union (``"affine_coupling"``, ``"clamp"``)."""
    models = typing.get_args(typing.get_args(union)[0])
    return {tag for m in models for tag in typing.get_args(m.model_fields[discriminator].annotation)}


#: Branch names that pydantic puts in error locations (``layers.0.affine_coupling.mask``).
_TAGS = _tags(Layer, "type") | _tags(Mask, "kind") | _tags(ScaleMap, "kind") | {"mlp", "resnet"}


class FlowSpec(_Model):
    """A normalizing flow: an event shape and a list of layers, applied in order.

    ``context_dim`` (default 0: unconditional) makes the flow conditional, ``q(x | c)``
    for a context vector ``c`` of that size: every coupling's conditioner reads the
    concatenation ``[x_a | c]`` (its first kernel's rows in that order); scaling layers
    and permutations do not read it. ``context_embedding`` (optional, needs
    ``context_dim > 0``) maps the context once, before the couplings, to ``features``
    entries, and the couplings read those instead (:class:`ContextEmbedding`). The
    canonical JSON (and so the hash) leaves out ``context_dim`` when it is 0 and
    ``context_embedding`` when it is absent, so specs written before either existed keep
    their hash.
    """

    format_version: Literal[1] = FORMAT_VERSION
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_. -]{0,64}$")] = "flow"
    event_shape: tuple[PosInt, ...]
    context_dim: NonNegInt = 0
    context_embedding: ContextEmbedding | None = None
    layers: tuple[Layer, ...]

    def __init__(self, /, **data: Any):
        super().__init__(**data)
        _check_against_event(self)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """The number of entries in one event: ``D`` of a vector flow, ``C * H * W`` of
        an image flow."""
        return math.prod(self.event_shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The event shape the flow gives (a squeeze changes it)."""
        shape = tuple(self.event_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape) if len(shape) == 1 or layer.whole else shape
        return shape

    @property
    def context_features(self) -> int:
        """The size of the context the couplings read: the embedding's ``features``, or
        ``context_dim`` without an embedding (0: unconditional)."""
        embedding = self.context_embedding
        return embedding.features if embedding is not None else self.context_dim

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON (sorted keys, defaults filled in)."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    # ------------------------------------------------------------------------- I/O
    def to_dict(self) -> dict:
        """Plain JSON data, defaults filled in (``context_dim`` only when nonzero,
        ``context_embedding`` only when present)."""
        data = self.model_dump(mode="json")
        if not data["context_dim"]:
            del data["context_dim"]
        if data["context_embedding"] is None:
            del data["context_embedding"]
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent) + "\n"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any) -> FlowSpec:
        """A spec from JSON-like data: ``dict`` with ``str`` keys, lists, strings,
        numbers, booleans and ``None`` (checked as a document is; see
        :mod:`flowbridge.document`)."""
        return cls._from_plain(document.plain(data))

    @classmethod
    def _from_plain(cls, data: Any) -> FlowSpec:
        if not isinstance(data, dict):
            raise SpecError(f"spec: expected a mapping, got {_show(data)}")
        version = data.get("format_version", FORMAT_VERSION)
        if isinstance(version, bool) or _integral(version) != FORMAT_VERSION:
            raise SpecError(f"format_version: expected {FORMAT_VERSION}, got {_show(version)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str | bytes) -> FlowSpec:
        return cls._from_plain(document.read_json(text))

    @classmethod
    def from_yaml(cls, text: str | bytes) -> FlowSpec:
        return cls._from_plain(document.read_yaml(text))

    def save(self, path: str | Path) -> None:
        """Write the spec as YAML (``.yaml``/``.yml``) or JSON, atomically."""
        path = Path(path)
        yaml_suffix = path.suffix in (".yaml", ".yml")
        write_atomic(path, self.to_yaml() if yaml_suffix else self.to_json())


def load_spec(path: str | Path) -> FlowSpec:
    """Read a spec from a ``.json``, ``.yaml`` or ``.yml`` file."""
    path = Path(path)
    if path.suffix not in (".json", ".yaml", ".yml"):
        raise SpecError(f"spec: expected a .json, .yaml or .yml file, got {path.name!r}")
    if not path.is_file():
        raise SpecError(f"spec: no such file {str(path)!r}")
    limit = current().document_bytes
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise SpecError(f"spec: cannot read {str(path)!r} ({exc.strerror or exc})") from None
    if path.suffix == ".json":
        return FlowSpec.from_json(data)
    return FlowSpec.from_yaml(data)


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of the spec format.

    It states every rule about a single field (types, choices, ranges of constants, the
    default ceilings on sizes). Rules that relate fields are checked on load and listed
    in the schema's ``description``: mask sizes against the event size, explicit masks
    and permutations of length D, ``low < high`` for a clamp, and the ceilings on the
    number of layers, conditioner depth and total parameter count.
    """
    schema = FlowSpec.model_json_schema()
    defs = schema.get("$defs", {})
    ceilings = current()
    # constraints pydantic leaves under its own names when a validator wraps the type
    keywords = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}
    for node in _schema_nodes(schema):
        if node.get("type") in ("integer", "number"):
            for short, keyword in keywords.items():
                if short in node:
                    node[keyword] = node.pop(short)
    # a discriminated union needs its tag: "type" of a layer, "kind" of a mask or scale
    for node in _schema_nodes(schema):
        tag = node.get("discriminator")
        if isinstance(tag, dict):
            for ref in tag.get("mapping", {}).values():
                target = defs[ref.rsplit("/", 1)[-1]]
                required = target.setdefault("required", [])
                if tag["propertyName"] not in required:
                    required.insert(0, tag["propertyName"])
    sizes = {
        ("FlowSpec", "event_shape"): ceilings.event_size,
        ("FlowSpec", "context_dim"): ceilings.event_size,
        ("Conditioner", "hidden"): ceilings.width,
        ("ResNetConditioner", "channels"): ceilings.width,
        ("ResNetConditioner", "blocks"): ceilings.depth,
        ("ContextEmbedding", "hidden"): ceilings.width,
        ("ContextEmbedding", "features"): ceilings.event_size,
        ("SplitMask", "size"): ceilings.event_size - 1,
        ("Permutation", "indices"): ceilings.event_size - 1,
    }
    for (model, field), maximum in sizes.items():
        prop = (schema if model == "FlowSpec" else defs[model])["properties"][field]
        for node in _schema_nodes(prop):
            if node.get("type") == "integer":
                node["maximum"] = maximum
    defs["Conditioner"]["properties"]["hidden"]["maxItems"] = ceilings.depth
    defs["ContextEmbedding"]["properties"]["hidden"]["maxItems"] = ceilings.depth
    defs["ResNetConditioner"]["required"] = ["kind"]  # no kind: an MLP conditioner
    schema["properties"]["layers"]["maxItems"] = ceilings.layers
    schema["properties"]["event_shape"]["minItems"] = 1
    schema["properties"]["event_shape"]["maxItems"] = 3  # (D,) or (C, H, W)
    schema["properties"]["layers"]["minItems"] = 1
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"flowbridge FlowSpec, format {FORMAT_VERSION}"
    schema["description"] = (
        "A normalizing flow. Checked on load beyond this schema: the event shape is (D,) "
        "or (C, H, W), and each layer takes its events (checkerboard and channel masks, "
        "resnet conditioners and squeezes images, permutations and the other masks and "
        "MLP conditioners vectors; a squeeze needs an even height and width); a split mask's size is "
        "below D; an explicit mask has D booleans and passes and transforms at least one "
        "entry; explicit permutation indices are a permutation of 0..D-1; a random "
        "permutation has a seed and others none; a clamp has low < high; a context "
        "embedding needs context_dim > 0; the flow has at "
        f"most {ceilings.params} parameters (ceilings are raised with flowbridge.limits)."
    )
    return schema


def _schema_nodes(node: Any):
    """Every dict in a JSON Schema tree (iteratively)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


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


def _check_against_event(spec: FlowSpec) -> None:
    errors: list[tuple[str, str]] = []
    if len(spec.event_shape) not in (1, 3):
        errors.append(
            ("event_shape", "expected a vector event shape (D,) or an image event shape "
             f"(C, H, W), got {_show(list(spec.event_shape))}")
        )  # fmt: skip
        raise _from_errors(errors)
    if not spec.layers:
        raise _from_errors([("layers", "expected at least one layer, got []")])
    if spec.context_embedding is not None and not spec.context_dim:
        errors.append(("context_embedding", "expected context_dim > 0 (an embedding maps "
                       "the context), got context_dim 0"))  # fmt: skip
        raise _from_errors(errors)
    if spec.context_dim and len(spec.event_shape) != 1:
        raise _from_errors([("context_dim", "expected 0 for image events (conditional image "
                             f"flows are not built yet), got {spec.context_dim}")])  # fmt: skip
    _check_ceilings(spec)
    for i, (layer, (_, acted)) in enumerate(zip(spec.layers, _scopes(spec), strict=False)):
        at = f"layers[{i}]"
        if len(acted) not in layer.ranks:
            want = " or ".join({1: "vector (D,)", 3: "image (C, H, W)"}[r] for r in layer.ranks)
            errors.append((at, f"expected {want} events for a {layer.type} layer, got "
                           f"events of shape {acted}"))  # fmt: skip
            break
        if layer.domain != "real" and i:
            errors.append((at, f"expected a {layer.type} layer first (it reads data in (0, 1)), "
                           f"got it at position {i}"))  # fmt: skip
        errors.extend(layer.check(acted, at))
        if errors:
            break  # the shapes after a layer that does not fit mean nothing
    if errors:
        raise _from_errors(errors)
    _check_param_count(spec)


def _scopes(spec: FlowSpec):
    """``(input event shape, shape the layer acts on)`` of each layer in turn. They differ
    after a factor-out: a layer then acts on the active channels ``(A, H, W)`` of its
    ``(C, H, W)`` input, but for a squeeze, which moves the whole tensor."""
    shape = tuple(spec.event_shape)
    active = shape[0]  # images: the channels still active (all, before any factor-out)
    for layer in spec.layers:
        if len(shape) != 3:
            yield shape, shape
            shape = layer.output_shape(shape)
            continue
        yield shape, shape if layer.whole else (active, *shape[1:])
        if layer.whole:
            shape = layer.output_shape(shape)
        active = layer.active_after(active)


def layer_scopes(spec: FlowSpec) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(input event shape, shape the layer acts on)`` per layer (see :func:`_scopes`)."""
    return list(_scopes(spec))


def layer_shapes(spec: FlowSpec) -> list[tuple[int, ...]]:
    """The event shape each layer acts on, in order (a squeeze changes it; after a
    factor-out, the active channels')."""
    return [acted for _, acted in _scopes(spec)]


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


def param_count(spec: FlowSpec) -> int:
    """The number of weights in ``spec``'s flow, by arithmetic (nothing is allocated)."""
    embedding = spec.context_embedding
    own = embedding.param_count(spec.context_dim) if embedding is not None else 0
    return own + sum(layer.param_count(shape, spec.context_features)
                     for layer, shape in zip(spec.layers, layer_shapes(spec), strict=True))  # fmt: skip


def _check_ceilings(spec: FlowSpec) -> None:
    """Sizes against :func:`flowbridge.limits`, before anything of that size is built."""
    ceil = current()
    hint = "raise it with flowbridge.limits({}=...) if this is meant"
    errors = []
    if spec.dim > ceil.event_size:
        at = "event_shape[0]" if len(spec.event_shape) == 1 else "event_shape"
        errors.append((at, f"expected at most {ceil.event_size} entries, got "
                       f"{spec.dim}; {hint.format('event_size')}"))  # fmt: skip
    if spec.context_dim > ceil.event_size:
        errors.append(("context_dim", f"expected at most {ceil.event_size}, got "
                       f"{spec.context_dim}; {hint.format('event_size')}"))  # fmt: skip
    if len(spec.layers) > ceil.layers:
        errors.append(("layers", f"expected at most {ceil.layers} layers, got "
                       f"{len(spec.layers)}; {hint.format('layers')}"))  # fmt: skip
    embedding = spec.context_embedding
    if embedding is not None and embedding.features > ceil.event_size:
        errors.append(("context_embedding.features", f"expected at most {ceil.event_size}, "
                       f"got {embedding.features}; {hint.format('event_size')}"))  # fmt: skip
    nets = [(f"layers[{i}].conditioner", getattr(layer, "conditioner", None))
            for i, layer in enumerate(spec.layers)]  # fmt: skip
    for at, cond in [("context_embedding", embedding), *nets]:
        if isinstance(cond, ResNetConditioner):
            if cond.blocks > ceil.depth:
                errors.append((f"{at}.blocks", f"expected at most {ceil.depth} blocks, got "
                               f"{cond.blocks}; {hint.format('depth')}"))  # fmt: skip
            if cond.channels > ceil.width:
                errors.append((f"{at}.channels", f"expected at most {ceil.width} channels, "
                               f"got {cond.channels}; {hint.format('width')}"))  # fmt: skip
            continue
        if cond is None:
            continue
        if len(cond.hidden) > ceil.depth:
            errors.append((f"{at}.hidden", f"expected at most {ceil.depth} hidden layers, "
                           f"got {len(cond.hidden)}; {hint.format('depth')}"))  # fmt: skip
        for j, width in enumerate(cond.hidden):
            if width > ceil.width:
                errors.append((f"{at}.hidden[{j}]", f"expected at most {ceil.width} units, "
                               f"got {width}; {hint.format('width')}"))  # fmt: skip
    if errors:
        raise _from_errors(errors)


def _check_param_count(spec: FlowSpec) -> None:
    """The parameter ceiling, once every layer fits its event (so the count is defined)."""
    ceil, hint = current(), "raise it with flowbridge.limits({}=...) if this is meant"
    count = param_count(spec)
    if count > ceil.params:
        raise _from_errors([("layers", f"expected at most {ceil.params} parameters in all, got "
                             f"{count} (about {memory(count)} as float64); "
                             f"{hint.format('params')}")])  # fmt: skip


# ------------------------------------------------------------------ error formatting
def _path(loc: tuple) -> str:
    out = ""
    prev_index = False
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
            prev_index = True
            continue
        if item in _TAGS and (prev_index or out.endswith(("mask", "scale", "conditioner"))):
            prev_index = False  # the discriminator's branch name, not a field
            continue
        out += f".{item}" if out else str(item)
        prev_index = False
    return out or "spec"


def _expected(err: dict) -> str:
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "constant":  # flowbridge's own rule, with its own message
        return err["msg"].rsplit(", got", 1)[0]
    if kind == "less_than_equal":
        return f"expected a number <= {ctx.get('le')}"
    if kind == "greater_than" and ctx.get("gt") == 0 and type(ctx.get("gt")) is int:
        return "expected a positive integer"
    if kind == "greater_than_equal" and ctx.get("ge") == 0:
        return "expected a non-negative number"
    if kind == "greater_than":
        return f"expected a number > {ctx.get('gt')}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "expected an integer"
    if kind in ("float_type", "float_parsing"):
        return "expected a number"
    if kind == "finite_number":
        return "expected a finite number"
    if kind in ("bool_type", "bool_parsing"):
        return "expected true or false"
    if kind in ("literal_error", "union_tag_invalid"):
        choices = ctx.get("expected") or ctx.get("expected_tags")
        return f"expected one of {choices}"
    if kind == "union_tag_not_found":
        return f"expected a {ctx.get('discriminator')} field"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in ("tuple_type", "list_type"):
        return "expected a list"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "expected a mapping"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s)"
    if kind == "string_pattern_mismatch":
        return f"expected a string matching {ctx.get('pattern')}"
    return "expected " + err["msg"][0].lower() + err["msg"][1:]


def _spec_error(exc: ValidationError) -> SpecError:
    errors = []
    for err in exc.errors():
        inner = err.get("ctx", {}).get("error")
        if isinstance(inner, SpecError):  # a nested model's own __init__ already failed
            here = _path(err["loc"])
            for path, message in inner.errors:
                sep = "" if path.startswith("[") else "."
                errors.append((path if here == "spec" else f"{here}{sep}{path}", message))
            continue
        message, path, got = _expected(err), _path(err["loc"]), err.get("input")
        if err["type"] == "union_tag_invalid":  # name the discriminator field itself
            field = err["ctx"]["discriminator"].strip("'")
            path, got = f"{path}.{field}", err["ctx"]["tag"]
        if err["type"] != "missing":
            message += f", got {_show(got)}"
        errors.append((path, message))
    return _from_errors(errors)


def _from_errors(errors: list[tuple[str, str]]) -> SpecError:
    lines = [f"{path}: {msg}" for path, msg in errors]
    head = lines[0] if len(lines) == 1 else f"{len(lines)} errors:\n  " + "\n  ".join(lines)
    return SpecError(head, errors)


# --------------------------------------------------------------------------- presets
def nice(
    dim: int,
    *,
    num_couplings: int = 4,
    hidden: tuple[int, ...] = (256, 256),
    activation: str = "relu",
    scaling: bool = True,
    context_dim: int = 0,
    context_embedding: Any = None,
    name: str = "nice",
) -> FlowSpec:
    """NICE (Dinh et al. 2015, arXiv:1410.8516): additive couplings whose masks
    alternate between the even and odd entries, then a diagonal scaling layer.

    The paper's MNIST model used 4 couplings of 5 hidden layers with 1000 units; pass
    ``hidden=(1000,) * 5`` for that size. The default is smaller for vector problems.
    ``context_dim > 0`` makes it conditional (see :class:`FlowSpec`), and
    ``context_embedding`` (a :class:`ContextEmbedding` or its dict, ``{"features": 8}``)
    maps the context first. Every argument is validated like the spec field it fills,
    and an error names the argument (``hidden: expected a list of positive integers,
    got 64``).
    """
    dim, cond = _count(dim, "dim"), _conditioner(hidden, activation)
    context_dim = _non_negative(context_dim, "context_dim")
    _choice(scaling, "scaling", (True, False))
    layers: list[Any] = [
        AdditiveCoupling(mask=ParityMask(parity="even" if i % 2 == 0 else "odd"), conditioner=cond)
        for i in range(_count(num_couplings, "num_couplings"))
    ]
    if scaling:
        layers.append(Scaling())
    return FlowSpec(name=name, event_shape=(dim,), context_dim=context_dim,
                    context_embedding=_embedding(context_embedding), layers=layers)  # fmt: skip


def realnvp(
    dim: int,
    *,
    num_couplings: int = 4,
    hidden: tuple[int, ...] = (256, 256),
    activation: str = "relu",
    scale: Any = None,
    mask: Literal["half", "parity"] = "half",
    permutation: Literal["reverse", "random"] | None = None,
    seed: int = 0,
    context_dim: int = 0,
    context_embedding: Any = None,
    name: str = "realnvp",
) -> FlowSpec:
    """RealNVP (Dinh et al. 2017, arXiv:1605.08803) for vector events: affine couplings
    whose masks alternate which part passes through (first/last half, or even/odd), or,
    with ``permutation``, keep one mask and permute between couplings (as Pyro's
    ``AffineCoupling`` + ``Permute`` stacks do).

    ``scale`` is a scale map or its dict (default ``{"kind": "exp"}``, the paper's
    ``exp(s)``); ``permutation`` optionally puts a ``reverse`` or seeded ``random``
    permutation between couplings (seeds ``seed``, ``seed + 1``, ...); ``context_dim > 0``
    makes it conditional (see :class:`FlowSpec`) and ``context_embedding`` (a
    :class:`ContextEmbedding` or its dict) maps the context first. Every argument is
    validated like the spec field it fills, and an error names the argument.
    """
    dim, count = _count(dim, "dim"), _count(num_couplings, "num_couplings")
    cond = _conditioner(hidden, activation)
    scale_map = ExpScale() if scale is None else _scale_map(scale)
    _choice(mask, "mask", ("half", "parity"))
    _choice(permutation, "permutation", (None, "reverse", "random"))
    seed = _non_negative(seed, "seed")
    context_dim = _non_negative(context_dim, "context_dim")
    layers: list[Any] = []
    for i in range(count):
        # with a permutation between couplings the mask stays put and the permutation
        # mixes: alternating as well would undo a reverse permutation's work
        flip = i % 2 == 1 and not permutation
        if mask == "half":
            m = HalfMask(part="last" if flip else "first")
        else:
            m = ParityMask(parity="odd" if flip else "even")
        layers.append(AffineCoupling(mask=m, conditioner=cond, scale=scale_map))
        if permutation and i < count - 1:
            kind_seed = {"seed": seed + i} if permutation == "random" else {}
            layers.append(Permutation(kind=permutation, **kind_seed))
    return FlowSpec(name=name, event_shape=(dim,), context_dim=context_dim,
                    context_embedding=_embedding(context_embedding), layers=layers)  # fmt: skip


def realnvp_image(
    event_shape: Any,
    *,
    num_scales: int = 2,
    blocks: int = 2,
    channels: int = 64,
    kernel_size: int = 3,
    activation: str = "relu",
    scale: Any = None,
    logit: float | None = None,
    actnorm: bool = False,
    name: str = "realnvp_image",
) -> FlowSpec:
    """RealNVP's multi-scale architecture for images ``(C, H, W)`` (Dinh et al. 2017,
    sec. 3.6): each of the first ``num_scales - 1`` scales is 3 affine couplings with
    checkerboard masks (parities even, odd, even), a squeeze, 3 with channel masks
    (first, last, first) and a factor-out of half the channels; the last scale is 4
    checkerboard couplings. Every coupling's conditioner is a ResNet of ``blocks``
    residual blocks of ``channels`` feature maps with ``kernel_size`` convolutions (the
    paper used 8 blocks of 64 for CIFAR-10; the default is smaller). ``scale`` is the
    scale map or its dict (default ``exp``). ``logit`` (an ``alpha``, say the paper's
    0.05) puts the logit preprocessing first, for dequantized data in (0, 1);
    ``actnorm=True`` puts an ActNorm before every coupling (Glow's; initialise it from
    data with :func:`flowbridge.actnorm_init`). ``H`` and ``W`` must halve
    ``num_scales - 1`` times. Every argument is validated like the spec field it fills.
    """
    if not isinstance(event_shape, (list, tuple)) or len(event_shape) != 3:
        raise SpecError(f"event_shape: expected (C, H, W), got {_show(event_shape)}")
    shape = tuple(_count(n, f"event_shape[{i}]") for i, n in enumerate(event_shape))
    scales = _count(num_scales, "num_scales")
    _choice(activation, "activation", ("relu", "tanh", "leaky_relu", "elu", "gelu"))
    net = ResNetConditioner(blocks=_non_negative(blocks, "blocks"),
                            channels=_count(channels, "channels"),
                            kernel_size=_count(kernel_size, "kernel_size"),
                            activation=activation)  # fmt: skip
    scale_map = ExpScale() if scale is None else _scale_map(scale)

    _choice(actnorm, "actnorm", (True, False))
    first = [] if logit is None else [_part(Logit, {"alpha": logit}, "logit")]

    def couplings(masks: list[Any]) -> list[Any]:
        out: list[Any] = []
        for mask in masks:
            out += [ActNorm()] * actnorm + [AffineCoupling(mask=mask, conditioner=net,
                                                           scale=scale_map)]  # fmt: skip
        return out

    layers: list[Any] = first
    for _ in range(scales - 1):
        layers += couplings([CheckerboardMask(parity=p) for p in ("even", "odd", "even")])
        layers.append(Squeeze())
        layers += couplings([ChannelMask(part=p) for p in ("first", "last", "first")])
        layers.append(FactorOut())
    layers += couplings([CheckerboardMask(parity=p) for p in ("even", "odd", "even", "odd")])
    return FlowSpec(name=name, event_shape=shape, layers=layers)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _count(value: Any, field: str) -> int:
    if not _is_int(value) or value < 1:
        raise SpecError(f"{field}: expected a positive integer, got {_show(value)}")
    return int(value)


def _non_negative(value: Any, field: str) -> int:
    if not _is_int(value) or value < 0:
        raise SpecError(f"{field}: expected a non-negative integer, got {_show(value)}")
    return int(value)


def _choice(value: Any, field: str, choices: tuple) -> None:
    if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
        raise SpecError(f"{field}: expected one of {', '.join(map(repr, choices))}, got "
                        f"{_show(value)}")  # fmt: skip


def _conditioner(hidden: Any, activation: Any) -> Conditioner:
    if not isinstance(hidden, (list, tuple)) or not all(_is_int(h) and h > 0 for h in hidden):
        raise SpecError(f"hidden: expected a list of positive integers, got {_show(hidden)}")
    _choice(activation, "activation", ("relu", "tanh", "leaky_relu", "elu", "gelu"))
    return Conditioner(hidden=tuple(int(h) for h in hidden), activation=activation)


def _scale_map(scale: Any) -> Any:
    if isinstance(scale, (ExpScale, ClampScale, SoftClampScale, SigmoidScale)):
        return scale
    if not isinstance(scale, dict):
        raise SpecError(f"scale: expected a scale map or its dict, got {_show(scale)}")
    return _part(ScaleMap, scale, "scale")


def _embedding(value: Any) -> ContextEmbedding | None:
    if value is None or isinstance(value, ContextEmbedding):
        return value
    if not isinstance(value, dict):
        raise SpecError(f"context_embedding: expected a ContextEmbedding, its dict or None, "
                        f"got {_show(value)}")  # fmt: skip
    return _part(ContextEmbedding, value, "context_embedding")


def _part(kind: Any, data: dict, field: str) -> Any:
    """``data`` validated as ``kind``; errors name ``field`` and the path under it."""
    try:
        return TypeAdapter(kind).validate_python(document.plain(data))
    except ValidationError as exc:
        err = _spec_error(exc)
        errors = []
        for path, message in err.errors:
            head, _, rest = path.partition(".")
            path = rest if head in _TAGS and rest else path
            errors.append((field + ("" if path == "spec" else "." + path), message))
        raise _from_errors(errors) from None
    except SpecError as exc:
        errors = [(f"{field}.{path}", message) for path, message in exc.errors]
        raise _from_errors(errors) if errors else SpecError(f"{field}: {exc}") from None


__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "BatchNorm",
    "ChannelMask",
    "CheckerboardMask",
    "ClampScale",
    "Conditioner",
    "ContextEmbedding",
    "ExpScale",
    "ExplicitMask",
    "FactorOut",
    "FlowSpec",
    "HalfMask",
    "Logit",
    "ParityMask",
    "SplitMask",
    "Permutation",
    "ResNetConditioner",
    "Scaling",
    "SigmoidScale",
    "SoftClampScale",
    "Squeeze",
    "json_schema",
    "load_spec",
    "param_count",
    "mask_indices",
    "nice",
    "permutation_indices",
    "realnvp",
    "realnvp_image",
]
