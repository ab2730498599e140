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

import typing
from typing import Annotated, Any

from pydantic import Field

from .autoregressive import MADE, AffineAutoregressive, SplineAutoregressive  # noqa: F401
from .conditioners import (  # noqa: F401
    AnyConditioner,
    Conditioner,
    ContextEmbedding,
    ResNetConditioner,
    _conditioner_kind,
    _odd,
)
from .couplings import (  # noqa: F401
    AdditiveCoupling,
    AffineCoupling,
    ElementwiseAffine,
    ElementwiseSpline,
    SplineCoupling,
    _Coupling,
)
from .diagonal import ActNorm, BatchNorm, Logit, Scaling  # noqa: F401
from .fields import (  # noqa: F401
    TAGS,
    Activation,
    Finite,
    Int,
    NonNegInt,
    PosInt,
    _constant,
    _integral,
    _Model,
    _schema_description,
)
from .layer import LAYER_MODELS, _LayerModel  # noqa: F401
from .linear import Conv1x1, conv1x1_permutation  # noqa: F401
from .maps import (  # noqa: F401
    ClampScale,
    ExpScale,
    RationalLinearSpline,
    RationalQuadraticSpline,
    ScaleMap,
    SigmoidScale,
    SoftClampScale,
    SoftplusScale,
    SplineMap,
    _Spline,
    _spline_kind,
)
from .masks import (  # noqa: F401
    IMAGE_MASKS,
    ChannelMask,
    CheckerboardMask,
    ExplicitMask,
    HalfMask,
    Mask,
    ParityMask,
    SplitMask,
    _image_mask_channels,
    _mask_sizes,
    mask_indices,
)
from .structure import FactorOut, Permutation, Squeeze, permutation_indices  # noqa: F401

Layer = Annotated[typing.Union[tuple(LAYER_MODELS)], Field(discriminator="type")]  # noqa: UP007


def _tags(union: Any, discriminator: str) -> set[str]:
    """The discriminator values of a tagged union (``"affine_coupling"``, ``"clamp"``)."""
    models = typing.get_args(typing.get_args(union)[0])
    return {tag for m in models for tag in typing.get_args(m.model_fields[discriminator].annotation)}


TAGS.update(_tags(Layer, "type") | _tags(Mask, "kind") | _tags(ScaleMap, "kind")
            | _tags(SplineMap, "kind") | {"mlp", "resnet"})  # fmt: skip
