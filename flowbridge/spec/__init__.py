"""The backend-neutral flow specification: validated, frozen, saved as JSON or YAML.

The package reads in the order the data flows:

- :mod:`~flowbridge.spec.models`: the layer models (couplings and their masks, scale maps
  and conditioners; scaling, permutation, squeeze, factor-out, ActNorm, batch norm,
  logit) and the field types they share, each checking its own fields;
- :mod:`~flowbridge.spec.flow`: :class:`FlowSpec` (an event shape and a list of layers),
  the rules that relate its fields, its canonical JSON and hash, its files;
- :mod:`~flowbridge.spec.schema`: the JSON Schema of the format;
- :mod:`~flowbridge.spec.presets`: the papers' architectures, :func:`nice`,
  :func:`realnvp` and :func:`realnvp_image`;
- :mod:`~flowbridge.spec.errors`: pydantic's errors as one :class:`~flowbridge.SpecError`
  whose messages name each field by its path.

Imports go one way, ``errors <- models <- flow <- schema, presets``, and nothing here
imports the layers, the code generator or a backend.
"""

from __future__ import annotations

from .flow import (
    FORMAT_VERSION,
    FlowSpec,
    layer_scopes,
    layer_shapes,
    load_spec,
    param_count,
)
from .models import (
    IMAGE_MASKS,
    LAYER_MODELS,
    MADE,
    Activation,
    ActNorm,
    AdditiveCoupling,
    AffineAutoregressive,
    AffineCoupling,
    AnyConditioner,
    BatchNorm,
    ChannelMask,
    CheckerboardMask,
    ClampScale,
    Conditioner,
    ContextEmbedding,
    ElementwiseAffine,
    ElementwiseSpline,
    ExplicitMask,
    ExpScale,
    FactorOut,
    Finite,
    HalfMask,
    Int,
    Layer,
    Logit,
    Mask,
    NonNegInt,
    ParityMask,
    Permutation,
    PosInt,
    RationalLinearSpline,
    RationalQuadraticSpline,
    ResNetConditioner,
    ScaleMap,
    Scaling,
    SigmoidScale,
    SoftClampScale,
    SoftplusScale,
    SplineAutoregressive,
    SplineCoupling,
    SplineMap,
    SplitMask,
    Squeeze,
    mask_indices,
    permutation_indices,
)
from .presets import maf, nice, nsf, realnvp, realnvp_image
from .schema import json_schema

__all__ = [
    "ActNorm",
    "Activation",
    "AdditiveCoupling",
    "AffineCoupling",
    "AnyConditioner",
    "BatchNorm",
    "ChannelMask",
    "CheckerboardMask",
    "ClampScale",
    "Conditioner",
    "ContextEmbedding",
    "ElementwiseAffine",
    "ElementwiseSpline",
    "ExpScale",
    "ExplicitMask",
    "FORMAT_VERSION",
    "FactorOut",
    "Finite",
    "FlowSpec",
    "HalfMask",
    "IMAGE_MASKS",
    "LAYER_MODELS",
    "Int",
    "Layer",
    "Logit",
    "Mask",
    "NonNegInt",
    "ParityMask",
    "Permutation",
    "RationalLinearSpline",
    "RationalQuadraticSpline",
    "PosInt",
    "ResNetConditioner",
    "ScaleMap",
    "SplineMap",
    "Scaling",
    "SigmoidScale",
    "SoftplusScale",
    "SoftClampScale",
    "SplineCoupling",
    "AffineAutoregressive",
    "MADE",
    "SplineAutoregressive",
    "SplitMask",
    "Squeeze",
    "json_schema",
    "layer_scopes",
    "layer_shapes",
    "load_spec",
    "mask_indices",
    "nice",
    "param_count",
    "permutation_indices",
    "maf",
    "nsf",
    "realnvp",
    "realnvp_image",
]
