"""Masks: which event entries pass through a coupling unchanged (they feed the
conditioner); the others are transformed."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StrictBool,
)

from .fields import PosInt, _Model, _schema_description


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
