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
    _schema_description,
)

FORMAT_VERSION = 1


class FlowSpec(_Model):
    """A normalizing flow: an event shape and a list of layers, applied in order.

    Layers apply in list order, ``y = layers[-1](...layers[1](layers[0](x)))``, on
    vector events ``(D,)`` or image events ``(C, H, W)``: a backend's flow takes tensors
    ``(*batch, D)`` or ``(*batch, C, H, W)`` (TFP image flows default to
    ``(*batch, H, W, C)``, :func:`flowbridge.to_tfp`) and gives log-dets ``(*batch,)``. A
    spec is validated, frozen data (assigning a field raises pydantic's
    ``ValidationError``): every field is checked on construction, each layer against the
    event shape it acts on, and the sizes against the ceilings of
    :func:`flowbridge.limits`. Every backend is generated from it
    (:func:`flowbridge.generate`).

    ``context_dim`` (default 0: unconditional) makes the flow conditional, ``q(x | c)``
    for a context vector ``c`` of that size: every coupling's conditioner reads the
    concatenation ``[x_a | c]`` (its first kernel's rows in that order); scaling layers
    and permutations do not read it. ``context_embedding`` (optional, needs
    ``context_dim > 0``) maps the context once, before the couplings, to ``features``
    entries, and the couplings read those instead (:class:`flowbridge.ContextEmbedding`).
    The canonical JSON (and so the hash) leaves out ``context_dim`` when it is 0 and
    ``context_embedding`` when it is absent, so specs written before either existed keep
    their hash.

    Attributes:
        format_version: ``1``, the spec format (the only one; default 1).
        name: up to 64 letters, digits, ``_``, ``.``, spaces or ``-``; default ``"flow"``.
        event_shape: ``(D,)`` or ``(C, H, W)``, positive integers; at most ``event_size``
            entries in all (a ceiling of :func:`flowbridge.limits`). Required.
        context_dim: the size of the context vector, a non-negative integer, default 0
            (unconditional); 0 for image events (conditional image flows are not built
            yet).
        context_embedding: a :class:`flowbridge.ContextEmbedding` (or its dict), or
            ``None`` (default); needs ``context_dim > 0``.
        layers: at least one layer (at most the ``layers`` ceiling), each a layer model
            (:class:`flowbridge.AffineCoupling`, ...) or its dict with ``type``; a
            :class:`flowbridge.Logit` only first. Required.

    Raises:
        SpecError: a field is missing, unknown or invalid, a layer does not fit the
            events it acts on, or a size is over a ceiling; the message names every
            field by its path (``layers[0].mask.size: ...``).

    Example:
        >>> import flowbridge as fb
        >>> net = fb.Conditioner(hidden=(8,))
        >>> spec = fb.FlowSpec(name="tiny", event_shape=(4,), layers=[
        ...     fb.AffineCoupling(conditioner=net), fb.Permutation(),
        ...     {"type": "affine_coupling", "conditioner": {"hidden": [8]}}])
        >>> spec.dim, [layer.type for layer in spec.layers]
        (4, ['affine_coupling', 'permutation', 'affine_coupling'])
        >>> fb.FlowSpec(event_shape=(4,), layers=[fb.Squeeze()])
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0]: expected image (C, H, W) events for a squeeze ...
    """

    model_config = _schema_description(
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
    )

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
        """The number of entries in one event.

        ``D`` of a vector flow, ``C * H * W`` of an image flow.

        Returns:
            int: the product of ``event_shape``.

        Example:
            >>> import flowbridge as fb
            >>> fb.realnvp(4, num_couplings=2, hidden=(8,)).dim
            4
            >>> fb.realnvp_image((3, 8, 8), blocks=1, channels=8).dim
            192
        """
        return math.prod(self.event_shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The event shape the flow gives, which a squeeze changes.

        Returns:
            tuple[int, ...]: ``event_shape`` for a vector flow; for an image flow,
            ``(C, H, W)`` after every squeeze, ``(4C, H/2, W/2)`` each (a factor-out
            keeps the shape: its channels stay in the tensor).

        Example:
            >>> import flowbridge as fb
            >>> spec = fb.FlowSpec(event_shape=(3, 8, 8), layers=[fb.Squeeze(), fb.FactorOut()])
            >>> spec.event_shape, spec.output_shape
            ((3, 8, 8), (12, 4, 4))
        """
        shape = tuple(self.event_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape) if len(shape) == 1 or layer.whole else shape
        return shape

    @property
    def context_features(self) -> int:
        """The size of the context the couplings read.

        The embedding's ``features``, or ``context_dim`` without an embedding (0:
        unconditional).

        Returns:
            int: the number of context entries each coupling's conditioner reads after
            ``x_a``.

        Example:
            >>> import flowbridge as fb
            >>> fb.realnvp(4, hidden=(8,), context_dim=3).context_features
            3
            >>> spec = fb.realnvp(4, hidden=(8,), context_dim=3, context_embedding={"features": 2})
            >>> spec.context_features
            2
        """
        embedding = self.context_embedding
        return embedding.features if embedding is not None else self.context_dim

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON (sorted keys, defaults filled in).

        The canonical JSON is :meth:`to_dict` written with sorted keys and no spaces, so
        equal specs have equal hashes however they were written (defaults left out or
        given, a dict or models, JSON or YAML); the name counts. Generated modules carry
        it in their header.

        Returns:
            str: 64 lowercase hexadecimal digits.

        Example:
            >>> import flowbridge as fb
            >>> spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
            >>> len(spec.hash), spec.hash == fb.FlowSpec.from_yaml(spec.to_yaml()).hash
            (64, True)
            >>> spec.hash == fb.realnvp(4, num_couplings=2, hidden=(8,), name="other").hash
            False
        """
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    # ------------------------------------------------------------------------- I/O
    def to_dict(self) -> dict:
        """The spec as plain JSON data, defaults filled in.

        Every field is written (``context_dim`` only when nonzero, ``context_embedding``
        only when present), as ``dict``, ``list``, ``str``, numbers, booleans and ``None``;
        :meth:`from_dict` reads it back.

        Returns:
            dict: the spec's fields by name, in field order.

        Example:
            >>> import flowbridge as fb
            >>> fb.FlowSpec(event_shape=(2,), layers=[fb.Scaling()]).to_dict()
            {'format_version': 1, 'name': 'flow', 'event_shape': [2],
             'layers': [{'type': 'scaling'}]}
        """
        data = self.model_dump(mode="json")
        if not data["context_dim"]:
            del data["context_dim"]
        if data["context_embedding"] is None:
            del data["context_embedding"]
        return data

    def to_json(self, indent: int | None = 2) -> str:
        """The spec as JSON text: :meth:`to_dict`, in field order, and a final newline.

        Args:
            indent: spaces per nesting level (default 2), or ``None`` for one line.

        Returns:
            str: the JSON text, ending in a newline; :meth:`from_json` reads it back.

        Example:
            >>> import flowbridge as fb
            >>> spec = fb.FlowSpec(event_shape=(2,), layers=[fb.Scaling()])
            >>> print(spec.to_json(indent=None), end="")
            {"format_version": 1, "name": "flow", "event_shape": [2],
             "layers": [{"type": "scaling"}]}
        """
        return json.dumps(self.to_dict(), indent=indent) + "\n"

    def to_yaml(self) -> str:
        """The spec as YAML text: :meth:`to_dict`, in field order (keys not sorted).

        Returns:
            str: one YAML document, ending in a newline; :meth:`from_yaml` reads it back.

        Example:
            >>> import flowbridge as fb
            >>> print(fb.FlowSpec(event_shape=(2,), layers=[fb.Scaling()]).to_yaml(), end="")
            format_version: 1
            name: flow
            event_shape:
            - 2
            layers:
            - type: scaling
        """
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any) -> FlowSpec:
        """A spec from JSON-like data.

        ``data`` is a ``dict`` with ``str`` keys, lists, strings, numbers, booleans and
        ``None`` (tuples and NumPy scalars count as lists and numbers), checked as a
        document is (``flowbridge.document``): a set, a non-string key, an integer beyond
        2**63 - 1 or a non-finite number is refused, wherever it is. A missing
        ``format_version`` is the current one, 1.

        Args:
            data: the spec's fields by name, as :meth:`to_dict` gives them (defaults may
                be left out).

        Returns:
            FlowSpec: the validated spec.

        Raises:
            SpecError: ``data`` is not a mapping or not JSON-like data, its
                ``format_version`` is not 1, or a field is missing, unknown or invalid
                (see :class:`flowbridge.FlowSpec`).

        Example:
            >>> import flowbridge as fb
            >>> spec = fb.FlowSpec.from_dict({"event_shape": [2], "layers": [{"type": "scaling"}]})
            >>> spec == fb.FlowSpec(event_shape=(2,), layers=[fb.Scaling()])
            True
            >>> fb.FlowSpec.from_dict({"event_shape": [2], "layers": []})
            Traceback (most recent call last):
                ...
            flowbridge.errors.SpecError: layers: expected at least one layer, got []
        """
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
        """A spec from JSON text.

        The text is read safely: at most ``document_bytes`` long and ``document_values``
        values (ceilings of :func:`flowbridge.limits`), no duplicate keys, no ``NaN`` or
        ``Infinity``, integers within 2**63 - 1; then validated as :meth:`from_dict`
        validates data.

        Args:
            text: one JSON document, ``str`` or UTF-8 ``bytes``.

        Returns:
            FlowSpec: the validated spec.

        Raises:
            SpecError: the text is too large, not UTF-8 or not valid JSON, holds
                something JSON data may not, or does not describe a valid spec.

        Example:
            >>> import flowbridge as fb
            >>> spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
            >>> fb.FlowSpec.from_json(spec.to_json()) == spec
            True
            >>> fb.FlowSpec.from_json('{"event_shape": [2], "event_shape": [3]}')
            Traceback (most recent call last):
                ...
            flowbridge.errors.SpecError: event_shape: duplicate key 'event_shape'
        """
        return cls._from_plain(document.read_json(text))

    @classmethod
    def from_yaml(cls, text: str | bytes) -> FlowSpec:
        """A spec from YAML text (one document, JSON-compatible types only).

        The text is composed with PyYAML's safe loader and read node by node: YAML-only
        types (sets, timestamps, binary, Python tags), merge keys, non-string and
        duplicate keys are refused, and aliases count every value they expand to against
        the ``document_values`` ceiling of :func:`flowbridge.limits` (as does the size
        against ``document_bytes``); then it is validated as :meth:`from_dict` validates
        data.

        Args:
            text: one YAML document, ``str`` or UTF-8 ``bytes``.

        Returns:
            FlowSpec: the validated spec.

        Raises:
            SpecError: the text is too large, not UTF-8 or not valid YAML, holds
                something JSON data may not, or does not describe a valid spec.

        Example:
            >>> import flowbridge as fb
            >>> spec = fb.FlowSpec.from_yaml("{event_shape: [2], layers: [{type: scaling}]}")
            >>> spec.event_shape, spec.layers
            ((2,), (Scaling(type='scaling'),))
            >>> fb.FlowSpec.from_yaml("{event_shape: !!set {2: null}, layers: []}")
            Traceback (most recent call last):
                ...
            flowbridge.errors.SpecError: event_shape: expected a mapping, got YAML !!set
        """
        return cls._from_plain(document.read_yaml(text))

    def save(self, path: str | Path) -> None:
        """Write the spec as YAML (``.yaml``/``.yml``) or JSON, atomically.

        The text goes to a temporary file beside ``path``, renamed into place, so an
        interrupted write never leaves a truncated file (a device or pipe, such as
        ``/dev/stdout``, is written through). :func:`flowbridge.load_spec` reads it back.

        Args:
            path: the file, ``str`` or ``pathlib.Path``: YAML (:meth:`to_yaml`) for a
                ``.yaml`` or ``.yml`` suffix, JSON (:meth:`to_json`) for any other.

        Raises:
            OSError: the file cannot be written (a missing directory, a full disk); an
                existing file is left as it was.

        Example:
            >>> import flowbridge as fb
            >>> import pathlib, tempfile
            >>> spec = fb.nice(2, hidden=(8,))
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     spec.save(pathlib.Path(tmp) / "nice.yaml")
            ...     fb.load_spec(pathlib.Path(tmp) / "nice.yaml") == spec
            True
        """
        path = Path(path)
        yaml_suffix = path.suffix in (".yaml", ".yml")
        write_atomic(path, self.to_yaml() if yaml_suffix else self.to_json())


def load_spec(path: str | Path) -> FlowSpec:
    """Read a spec from a ``.json``, ``.yaml`` or ``.yml`` file.

    The suffix picks the format (:meth:`flowbridge.FlowSpec.from_json` or
    :meth:`flowbridge.FlowSpec.from_yaml`); at most ``document_bytes`` (a ceiling of
    :func:`flowbridge.limits`) and one byte more are read, so an oversized file fails
    without being read whole.

    Args:
        path: the file, ``str`` or ``pathlib.Path``, with a ``.json``, ``.yaml`` or
            ``.yml`` suffix.

    Returns:
        FlowSpec: the validated spec.

    Raises:
        SpecError: the suffix is not ``.json``, ``.yaml`` or ``.yml``; the file does not
            exist or cannot be read; or its text is not a valid spec (as in
            :meth:`flowbridge.FlowSpec.from_json`).

    Example:
        >>> import flowbridge as fb
        >>> import pathlib, tempfile
        >>> spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     spec.save(pathlib.Path(tmp) / "flow.json")
        ...     fb.load_spec(pathlib.Path(tmp) / "flow.json").hash == spec.hash
        True
        >>> fb.load_spec("flow.txt")
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: spec: expected a .json, .yaml or .yml file, got 'flow.txt'
    """
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
    """The number of weights in ``spec``'s flow, by arithmetic (nothing is allocated).

    Every parameter :func:`flowbridge.init_params` gives, counted entry by entry: the
    conditioners' kernels and biases, the context embedding's, scaling and ActNorm
    weights, and a batch norm's state (running averages) too. The ``params`` ceiling of
    :func:`flowbridge.limits` is checked against it when a spec is built.

    Args:
        spec: a validated :class:`flowbridge.FlowSpec`.

    Returns:
        int: the number of scalar weights.

    Raises:
        AttributeError: ``spec`` is not a :class:`flowbridge.FlowSpec` (a plain dict,
            say: validate it first with :meth:`flowbridge.FlowSpec.from_dict`).

    Example:
        >>> import flowbridge as fb
        >>> spec = fb.realnvp(4, num_couplings=2, hidden=(8,))  # per coupling 2->8->4
        >>> fb.param_count(spec) == 2 * ((2 * 8 + 8) + (8 * 4 + 4))
        True
        >>> sum(w.size for w in fb.init_params(spec).values())
        120
    """
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
