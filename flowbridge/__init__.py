"""flowbridge: normalizing flows written once, generated into Pyro, TFP, JAX and NumPy.

``import flowbridge`` loads neither torch nor tensorflow; each framework is imported
only when a flow for it is built.
"""

from __future__ import annotations

from . import persist as persist  # fb.persist: saving whole flows
from .build import generate, module_for, to_jax, to_numpy, to_pyro, to_tfp
from .check import TOLERANCES, Report, check
from .data import actnorm_init, bits_per_dim, dequantize
from .errors import BackendUnavailable, ParamError, SpecError
from .layers import param_shapes
from .limits import Limits, limits
from .native import NativeError, from_numpyro_native, from_pyro_native, from_tfp_native
from .params import (
    check_params,
    init_params,
    load_params,
    params_from_jax,
    params_from_pyro,
    params_from_tfp,
    save_params,
)
from .spec import (
    MADE,
    ActNorm,
    AdditiveCoupling,
    AffineAutoregressive,
    AffineCoupling,
    BatchNorm,
    ChannelMask,
    CheckerboardMask,
    ClampScale,
    Conditioner,
    ContextEmbedding,
    Conv1x1,
    ElementwiseAffine,
    ElementwiseSpline,
    ExplicitMask,
    ExpScale,
    FactorOut,
    FlowSpec,
    HalfMask,
    Logit,
    ParityMask,
    Permutation,
    RationalLinearSpline,
    RationalQuadraticSpline,
    ResNetConditioner,
    Scaling,
    SigmoidScale,
    SoftClampScale,
    SoftplusScale,
    SplineAutoregressive,
    SplineCoupling,
    SplitMask,
    Squeeze,
    glow,
    json_schema,
    load_spec,
    maf,
    nice,
    nsf,
    param_count,
    realnvp,
    realnvp_image,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    """``flowbridge.to_numpyro``, imported when first asked for: it needs NumPyro, which
    ``import flowbridge`` never imports (a missing one is a BackendUnavailable, an
    ImportError naming the extra)."""
    if name == "to_numpyro":
        import importlib.util

        missing = [m for m in ("jax", "numpyro") if importlib.util.find_spec(m) is None]
        if missing:
            raise BackendUnavailable(f"to_numpyro needs {', '.join(missing)}: "
                                     "pip install 'flowbridge[jax]'")  # fmt: skip
        from .numpyro import to_numpyro

        return to_numpyro
    raise AttributeError(f"module 'flowbridge' has no attribute {name!r}")

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "BackendUnavailable",
    "BatchNorm",
    "ChannelMask",
    "CheckerboardMask",
    "ClampScale",
    "Conditioner",
    "ContextEmbedding",
    "Conv1x1",
    "ElementwiseAffine",
    "ElementwiseSpline",
    "ExpScale",
    "ExplicitMask",
    "FactorOut",
    "FlowSpec",
    "HalfMask",
    "Limits",
    "Logit",
    "NativeError",
    "ParamError",
    "ParityMask",
    "Permutation",
    "RationalLinearSpline",
    "RationalQuadraticSpline",
    "Report",
    "ResNetConditioner",
    "Scaling",
    "SigmoidScale",
    "SoftplusScale",
    "SoftClampScale",
    "SplineCoupling",
    "AffineAutoregressive",
    "MADE",
    "SplineAutoregressive",
    "SpecError",
    "SplitMask",
    "Squeeze",
    "TOLERANCES",
    "actnorm_init",
    "bits_per_dim",
    "check",
    "check_params",
    "dequantize",
    "from_numpyro_native",
    "from_pyro_native",
    "from_tfp_native",
    "generate",
    "init_params",
    "json_schema",
    "limits",
    "load_params",
    "load_spec",
    "module_for",
    "nice",
    "param_count",
    "param_shapes",
    "params_from_jax",
    "params_from_pyro",
    "params_from_tfp",
    "glow",
    "maf",
    "nsf",
    "realnvp",
    "realnvp_image",
    "save_params",
    "to_jax",
    "to_numpy",
    "to_numpyro",
    "to_pyro",
    "to_tfp",
]
