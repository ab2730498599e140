"""The conditioners (an MLP for vectors, a ResNet for images) and the context embedding."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    Tag,
)
from pydantic_core import PydanticCustomError

from .fields import Activation, Finite, NonNegInt, PosInt, _Model, _schema_description


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
