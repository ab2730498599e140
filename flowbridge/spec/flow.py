"""A normalizing flow as data: :class:`FlowSpec`, its canonical JSON and hash, its files.

Layers apply in list order: ``y = layers[-1](...layers[1](layers[0](x)))``.

A :class:`FlowSpec` is data. Nothing in it ever reaches generated code as code: numbers
are validated and written as literals, strings only inside ``repr``-quoted constants.
Each layer model checks its own fields (:mod:`flowbridge.spec.models`); the rules that
relate fields across the flow (each layer against the event shape it acts on, the size
ceilings of :func:`flowbridge.limits`, the weight count) are checked here, on
construction.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field

from .. import document
from ..document import show as _show
from ..errors import SpecError
from ..files import write_atomic
from ..limits import current, memory
from .errors import from_errors as _from_errors
from .models import (
    ContextEmbedding,
    Layer,
    NonNegInt,
    PosInt,
    ResNetConditioner,
    _integral,
    _Model,
)

FORMAT_VERSION = 1


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


# ------------------------------------------------------------------ rules across the flow
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
