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
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from .errors import SpecError

FORMAT_VERSION = 1

PosInt = Annotated[StrictInt, Field(gt=0)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Activation = Literal["relu", "tanh", "leaky_relu", "elu", "gelu"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any):
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


Mask = Annotated[
    HalfMask | SplitMask | ParityMask | ExplicitMask, Field(discriminator="kind")
]


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
    bound: Annotated[Finite, Field(gt=0.0)] = 3.0


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
    negative_slope: Annotated[Finite, Field(ge=0)] = 0.01  # leaky_relu only


# --------------------------------------------------------------------------- layers
class AdditiveCoupling(_Model):
    """NICE additive coupling (arXiv:1410.8516): ``y_b = x_b + m(x_a)``, log-det 0."""

    type: Literal["additive_coupling"] = "additive_coupling"
    mask: Mask = Field(default_factory=HalfMask)
    conditioner: Conditioner = Field(default_factory=Conditioner)


class AffineCoupling(_Model):
    """RealNVP affine coupling (arXiv:1605.08803):
    ``y_b = x_b * scale(s(x_a)) + t(x_a)``, log-det ``sum(log scale)``."""

    type: Literal["affine_coupling"] = "affine_coupling"
    mask: Mask = Field(default_factory=HalfMask)
    conditioner: Conditioner = Field(default_factory=Conditioner)
    scale: ScaleMap = Field(default_factory=ExpScale)


class Scaling(_Model):
    """NICE's diagonal scaling layer: ``y = x * exp(s)`` with a learned vector ``s``."""

    type: Literal["scaling"] = "scaling"


class Permutation(_Model):
    """A fixed permutation ``y = x[..., indices]``: ``reverse``, ``random`` (``seed``
    drawn with ``numpy.random.default_rng(seed).permutation(D)``) or ``explicit``."""

    type: Literal["permutation"] = "permutation"
    kind: Literal["reverse", "random", "explicit"] = "reverse"
    seed: NonNegInt | None = None
    indices: tuple[NonNegInt, ...] | None = None


Layer = Annotated[
    AdditiveCoupling | AffineCoupling | Scaling | Permutation, Field(discriminator="type")
]

_TAGS = {"additive_coupling", "affine_coupling", "scaling", "permutation", "half",
         "split", "parity", "explicit", "exp", "clamp", "soft_clamp", "sigmoid"}  # fmt: skip


class FlowSpec(_Model):
    """A normalizing flow: an event shape and a list of layers, applied in order."""

    format_version: Literal[1] = FORMAT_VERSION
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_. -]{0,64}$")] = "flow"
    event_shape: tuple[PosInt, ...]
    layers: tuple[Layer, ...]

    def __init__(self, **data: Any):
        super().__init__(**data)
        _check_against_event(self)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """Event size ``D`` of a vector flow."""
        return self.event_shape[0]

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON (sorted keys, defaults filled in)."""
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    # ------------------------------------------------------------------------- I/O
    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent) + "\n"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any) -> FlowSpec:
        if not isinstance(data, dict):
            raise SpecError(f"spec: expected a mapping, got {_show(data)}")
        if "format_version" in data and data["format_version"] != FORMAT_VERSION:
            raise SpecError(
                f"format_version: expected {FORMAT_VERSION}, got {_show(data['format_version'])}"
            )
        return cls(**{str(k): v for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str) -> FlowSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        return cls.from_dict(data)

    @classmethod
    def from_yaml(cls, text: str) -> FlowSpec:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(f"spec: invalid YAML: {exc}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        yaml_suffix = path.suffix in (".yaml", ".yml")
        path.write_text(self.to_yaml() if yaml_suffix else self.to_json())


def load_spec(path: str | Path) -> FlowSpec:
    """Read a spec from a ``.json``, ``.yaml`` or ``.yml`` file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec: no such file {str(path)!r}")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        return FlowSpec.from_yaml(text)
    if path.suffix == ".json":
        return FlowSpec.from_json(text)
    raise SpecError(f"spec: expected a .json, .yaml or .yml file, got {path.name!r}")


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of the spec format."""
    schema = FlowSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"flowbridge FlowSpec, format {FORMAT_VERSION}"
    return schema


# ------------------------------------------------------------------ derived structure
def mask_indices(mask, dim: int) -> tuple[list[int], list[int]]:
    """``(passed, transformed)`` event indices of a mask, each in increasing order."""
    if mask.kind in ("half", "split"):
        if mask.kind == "split":
            k = min(mask.size, dim)
        else:
            k = dim // 2 if mask.rounding == "floor" else (dim + 1) // 2
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
    if len(spec.event_shape) != 1:
        errors.append(
            ("event_shape", "expected a vector event shape (D,); image event shapes "
             f"(C, H, W) are not supported yet, got {_show(list(spec.event_shape))}")
        )  # fmt: skip
        raise _from_errors(errors)
    if not spec.layers:
        raise _from_errors([("layers", "expected at least one layer, got []")])
    dim = spec.dim
    for i, layer in enumerate(spec.layers):
        at = f"layers[{i}]"
        if layer.type in ("additive_coupling", "affine_coupling"):
            mask = layer.mask
            if mask.kind == "split" and mask.size >= dim:
                errors.append((f"{at}.mask.size", f"expected fewer than the {dim} event "
                               f"entries, got {mask.size}"))  # fmt: skip
                continue
            if mask.kind == "explicit" and len(mask.values) != dim:
                errors.append((f"{at}.mask.values", f"expected {dim} booleans (one per "
                               f"event entry), got {len(mask.values)}"))  # fmt: skip
                continue
            passed, transformed = mask_indices(mask, dim)
            if not passed or not transformed:
                errors.append((f"{at}.mask", f"expected a mask that passes at least one and "
                               f"transforms at least one of the {dim} entries, got "
                               f"{len(passed)} passed"))  # fmt: skip
            if layer.type == "affine_coupling" and layer.scale.kind == "clamp":
                if not layer.scale.low < layer.scale.high:
                    errors.append((f"{at}.scale.high", f"expected a value > low "
                                   f"({layer.scale.low}), got {layer.scale.high}"))  # fmt: skip
        elif layer.type == "permutation":
            errors.extend(_check_permutation(layer, dim, at))
    if errors:
        raise _from_errors(errors)


def _check_permutation(layer: Permutation, dim: int, at: str) -> list[tuple[str, str]]:
    if layer.kind == "random" and layer.seed is None:
        return [(f"{at}.seed", "expected a non-negative integer for kind 'random', got None")]
    if layer.kind != "random" and layer.seed is not None:
        return [(f"{at}.seed", f"expected no seed for kind {layer.kind!r}, got {layer.seed}")]
    if layer.kind == "explicit":
        if layer.indices is None:
            return [(f"{at}.indices", "expected a permutation of range(D) for kind "
                     "'explicit', got None")]  # fmt: skip
        if sorted(layer.indices) != list(range(dim)):
            return [(f"{at}.indices", f"expected a permutation of 0..{dim - 1}, got "
                     f"{_show(list(layer.indices))}")]  # fmt: skip
    elif layer.indices is not None:
        return [(f"{at}.indices", f"expected no indices for kind {layer.kind!r}")]
    return []


# ------------------------------------------------------------------ error formatting
def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _path(loc: tuple) -> str:
    out = ""
    prev_index = False
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
            prev_index = True
            continue
        if item in _TAGS and (prev_index or out.endswith(("mask", "scale"))):
            prev_index = False  # the discriminator's branch name, not a field
            continue
        out += f".{item}" if out else str(item)
        prev_index = False
    return out or "spec"


def _expected(err: dict) -> str:
    kind, ctx = err["type"], err.get("ctx", {})
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
    name: str = "nice",
) -> FlowSpec:
    """NICE (Dinh et al. 2015, arXiv:1410.8516): additive couplings whose masks
    alternate between the even and odd entries, then a diagonal scaling layer.

    The paper's MNIST model used 4 couplings of 5 hidden layers with 1000 units; pass
    ``hidden=(1000,) * 5`` for that size. The default is smaller for vector problems.
    """
    layers: list[Any] = [
        AdditiveCoupling(
            mask=ParityMask(parity="even" if i % 2 == 0 else "odd"),
            conditioner=Conditioner(hidden=tuple(hidden), activation=activation),
        )
        for i in range(_count(num_couplings, "num_couplings"))
    ]
    if scaling:
        layers.append(Scaling())
    return FlowSpec(name=name, event_shape=(dim,), layers=layers)


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
    name: str = "realnvp",
) -> FlowSpec:
    """RealNVP (Dinh et al. 2017, arXiv:1605.08803) for vector events: affine couplings
    whose masks alternate which part passes through (first/last half, or even/odd), or,
    with ``permutation``, keep one mask and permute between couplings (as Pyro's
    ``AffineCoupling`` + ``Permute`` stacks do).

    ``scale`` is a scale map or its dict (default ``{"kind": "exp"}``, the paper's
    ``exp(s)``); ``permutation`` optionally puts a ``reverse`` or seeded ``random``
    permutation between couplings (seeds ``seed``, ``seed + 1``, ...).
    """
    layers: list[Any] = []
    for i in range(_count(num_couplings, "num_couplings")):
        # with a permutation between couplings the mask stays put and the permutation
        # mixes: alternating as well would undo a reverse permutation's work
        flip = i % 2 == 1 and not permutation
        if mask == "half":
            m = HalfMask(part="last" if flip else "first")
        else:
            m = ParityMask(parity="odd" if flip else "even")
        layers.append(
            AffineCoupling(
                mask=m,
                conditioner=Conditioner(hidden=tuple(hidden), activation=activation),
                scale=scale if scale is not None else ExpScale(),
            )
        )
        if permutation and i < num_couplings - 1:
            kind_seed = {"seed": seed + i} if permutation == "random" else {}
            layers.append(Permutation(kind=permutation, **kind_seed))
    return FlowSpec(name=name, event_shape=(dim,), layers=layers)


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{field}: expected a positive integer, got {_show(value)}")
    return value


__all__ = [
    "AdditiveCoupling",
    "AffineCoupling",
    "ClampScale",
    "Conditioner",
    "ExpScale",
    "ExplicitMask",
    "FlowSpec",
    "HalfMask",
    "ParityMask",
    "SplitMask",
    "Permutation",
    "Scaling",
    "SigmoidScale",
    "SoftClampScale",
    "json_schema",
    "load_spec",
    "mask_indices",
    "nice",
    "permutation_indices",
    "realnvp",
]
