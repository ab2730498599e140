"""The backend contract: what a backend gives flowbridge, declared once and checked.

A backend is one folder under ``flowbridge/backends/`` with the same three modules:

- ``emit.py``: one :class:`Emitter` subclass, the code generator's view of the framework.
  It translates IR *operations* (:data:`Emitter.OPS`, the shared table extended with the
  framework's spellings, as tinygrad's renderers extend ``CStyleLanguage.code_for_op``)
  and writes each layer class around bodies that :mod:`flowbridge.codegen` prints from
  traces of the neutral definitions; it never holds a layer's formula.
- ``prelude.py``: the code every generated module needs at run time (base classes,
  input checks, weight initialisation, parameter loading), written as a real module
  that is imported, linted and unit-tested, and *inlined* into generated modules from
  its source, definition by definition (:class:`Prelude`), so those stay standalone.
- ``runtime.py``: how flowbridge drives a loaded flow in-process for the conformance
  check (:class:`Runtime`): tensors in and out, devices, Jacobians by autodiff.

:func:`check_emitter` and :func:`check_runtime` run when the registry first hands a
backend out (:meth:`flowbridge.backends.Backend.emitter`), so a backend that leaves a
part out fails loudly, naming the part, before any code is generated.

The contract fits a functional framework too: nothing in it assumes objects with state.
A layer's weights reach its traced body through ``self.<name>`` *in the emitted text
only*; a functional backend's :meth:`Emitter.layer_class` may emit functions over a
parameter pytree instead, and state updates (the IR's ``assign`` effects,
:data:`flowbridge.ir.EFFECTS`) are rendered by :meth:`Emitter.effect`, which such a
backend overrides to collect the new values and return them rather than write in place.
"""

from __future__ import annotations

import abc
import ast
import functools
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol, runtime_checkable

from .. import ir


class ContractError(TypeError):
    """A backend that does not implement the contract; the message names each part."""


# ------------------------------------------------------------------------ prelude
@functools.cache
def _definitions(path: Path) -> dict[str, str]:
    """{name: source} of each top-level function, class and assignment in ``path``,
    whole lines from its first (decorators included) to its last."""
    text = path.read_text()
    lines = text.splitlines()
    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        else:
            continue
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        for name in names:
            out[name] = "\n".join(lines[first - 1 : node.end_lineno])
    return out


@functools.cache
def _imports(path: Path) -> str:
    """The prelude's own import statements (not ``from __future__``), as written."""
    text = path.read_text()
    lines = text.splitlines()
    out = []
    for node in ast.parse(text).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", "") != "__future__":
            out.append("\n".join(lines[node.lineno - 1 : node.end_lineno]))
    return "\n".join(out)


class Prelude:
    """A prelude module read as source (never imported here: it imports its framework).

    Args:
        path: the module's file.

    Example:
        >>> from flowbridge.backends import prelude
        >>> text = Prelude(Path(prelude.__file__)).source(["_under"])
        >>> text.splitlines()[0]
        'def _under(table, prefix):'
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def names(self) -> set[str]:
        """Every name the prelude defines at top level."""
        return set(_definitions(self.path))

    def imports(self) -> str:
        """The prelude's import statements, as written in it."""
        return _imports(self.path)

    def source(self, names: list[str] | tuple[str, ...]) -> str:
        """The definitions called ``names``, in that order, two blank lines apart.

        Raises:
            ContractError: a name the prelude does not define.
        """
        table = _definitions(self.path)
        missing = [n for n in names if n not in table]
        if missing:
            raise ContractError(f"{self.path.name}: defines no {', '.join(missing)}")
        return "\n\n\n".join(table[n] for n in names)


#: The module every backend's generated code shares (pure Python, no framework).
SHARED = Prelude(Path(__file__).with_name("prelude.py"))


# ------------------------------------------------------------------------ emitter
#: IR ops whose Python spelling is the same in every framework (the defaults an
#: :class:`Emitter` extends; a backend overrides only what differs).
SHARED_OPS: dict[str, str] = {
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "neg": "-{0}",
    "slice": "{0}[{index}]",
    "per_channel": "{0}[:, None, None]",
    "conv2d": "_conv2d({0}, {1}, {2})",
    "batch_mean": "_batch_mean({0}, {event_ndims})",
    "squeeze2x2": "_squeeze2x2({0})",
    "unsqueeze2x2": "_unsqueeze2x2({0})",
    "call": "self.{method}({args})",
}


class Emitter(abc.ABC):
    """A backend's code generator: the declared interface :mod:`flowbridge.codegen` uses.

    Class attributes (all required unless a default is shown):

    - ``TITLE``: the framework's words in a generated module's docstring.
    - ``USAGE`` / ``CONDITIONAL_USAGE``: how to use a (conditional) generated module;
      ``{event_ndims}`` and ``{context_dim}`` are filled in.
    - ``IMAGE_SHAPES``: the shape convention of an image flow's module.
    - ``IMPORTS`` / ``CONDITIONAL_IMPORTS``: the framework imports a (conditional)
      generated module starts with.
    - ``OPS``: IR op -> expression template (``{0}``, ``{1}``: arguments; ``{name}``:
      attributes); must cover every op of :data:`flowbridge.ir.OPS`.
    - ``OP_IMPORTS``: op -> a standard-library import it needs (default none).
    - ``CONSTANT``: the ``__init__`` statement that stores a constant built once from
      the layer's constant buffers (``{name}``, ``{value}``; a checkerboard's mask):
      a non-persistent buffer in Pyro, so ``state_dict`` keys never change.
    - ``IN_PLACE``, ``SPLIT``: optional peepholes, as data (see
      :func:`flowbridge.codegen.emit_body`); ``None`` where the framework has none.
    - ``PRELUDE``: the backend's prelude module file.
    - ``BASE``: prelude definitions every generated module has, in order;
      ``UNCONDITIONAL`` those of a flow without a context (default none),
      ``CONDITIONAL`` those of a flow with one, ``EMBEDDING`` those of a flow with a
      context embedding, ``SHAPES`` those of a flow with a shape-changing layer and
      ``IMAGE`` those of an image flow (defaults none).
    - ``OP_HELPERS`` / ``FIELD_HELPERS``: op or field kind -> the prelude definitions
      a module needs when a traced body uses that op or a layer has that field kind.
    - ``DOMAINS``: input domain -> its closed interval (default: ``unit_interval``,
      [0, 1]); see :meth:`domain_lines`.
    """

    TITLE: ClassVar[str]
    USAGE: ClassVar[str]
    CONDITIONAL_USAGE: ClassVar[str]
    IMAGE_SHAPES: ClassVar[str]
    IMPORTS: ClassVar[str]
    CONDITIONAL_IMPORTS: ClassVar[str]
    OPS: ClassVar[dict[str, str]] = SHARED_OPS
    OP_IMPORTS: ClassVar[dict[str, str]] = {}
    CONSTANT: ClassVar[str]
    IN_PLACE: ClassVar[dict[str, tuple[str, tuple[str, ...]]] | None] = None
    SPLIT: ClassVar[str | None] = None
    PRELUDE: ClassVar[Path]
    BASE: ClassVar[tuple[str, ...]]
    CONDITIONAL: ClassVar[tuple[str, ...]]
    EMBEDDING: ClassVar[tuple[str, ...]]
    UNCONDITIONAL: ClassVar[tuple[str, ...]] = ()
    SHAPES: ClassVar[tuple[str, ...]] = ()
    IMAGE: ClassVar[tuple[str, ...]] = ()
    OP_HELPERS: ClassVar[dict[str, tuple[str, ...]]] = {}
    FIELD_HELPERS: ClassVar[dict[str, tuple[str, ...]]] = {}

    REQUIRED: ClassVar[tuple[str, ...]] = (
        "TITLE", "USAGE", "CONDITIONAL_USAGE", "IMAGE_SHAPES", "IMPORTS",
        "CONDITIONAL_IMPORTS", "OPS", "CONSTANT", "PRELUDE", "BASE", "CONDITIONAL", "EMBEDDING",
    )  # fmt: skip

    @property
    def prelude(self) -> Prelude:
        """The backend's :class:`Prelude`."""
        return Prelude(self.PRELUDE)

    def helpers(self, names: list[str] | tuple[str, ...]) -> str:
        """The prelude definitions ``names``, as source to inline."""
        return self.prelude.source(names)

    #: The closed interval of each input domain but the reals (a plan's ``domain``).
    DOMAINS: ClassVar[dict[str, tuple[float, float]]] = {"unit_interval": (0.0, 1.0)}

    def domain_lines(self, plan: Any) -> list[str]:
        """The class-body lines of a layer whose input is not any real vector: its
        ``domain_interval = (low, high)`` (the prelude's ``_Layer`` has ``None``, the
        reals), against which the prelude checks the input (always in the reference, when
        validating in a framework), then a blank line; none where ``plan.domain`` is
        ``"real"``."""
        if plan.domain == "real":
            return []
        low, high = self.DOMAINS[plan.domain]
        return [f"    domain_interval = ({low!r}, {high!r})  # {plan.domain}", ""]

    @staticmethod
    def shape_arg(plan: Any) -> str:
        """The constructor argument that gives a plan's "vector" field its shape."""
        return "active_shape" if "active_shape" in plan.args else "event_shape"

    def effect(self, op: str, args: list[str]) -> str:
        """The statement for one state update (an IR effect such as ``assign``): by
        default the op's template; a functional backend returns the new value instead."""
        return self.OPS[op].format(*args)

    @abc.abstractmethod
    def layer_class(
        self,
        name: str,
        plan: Any,
        forward: list[str],
        inverse: list[str],
        training: list[str] | None = None,
        methods: tuple[str, ...] = (),
        constants: tuple[str, ...] = (),
    ) -> str:
        """The source of one layer class called ``name`` for ``plan``
        (:class:`flowbridge.layers.Plan`), around the printed ``forward``, ``inverse``
        and (for a layer with a training mode) ``training`` bodies; ``methods`` are the
        class's called sub-functions (its conditioner), given to
        :func:`flowbridge.source.traced_methods`, and ``constants`` the lines that end its
        ``__init__``, building constants once."""

    @abc.abstractmethod
    def embedding_class(self, plan: Any, body: list[str]) -> str:
        """The source of the ``ContextEmbedding`` class around its printed body."""

    @abc.abstractmethod
    def flow_code(self, spec: Any, calls: list[tuple[str, dict]], embedding: Any = None) -> str:
        """The module's ``build_flow`` (and what it needs that depends on the spec):
        ``calls`` is each layer's class name and constructor arguments, in order."""


def check_emitter(cls: type, name: str = "") -> None:
    """Raise :class:`ContractError` naming every part of the contract the emitter class
    ``cls`` leaves out: an abstract method, a required attribute, an IR op without a
    template, a prelude definition the prelude does not have."""
    where = name or cls.__name__
    problems = []
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        problems.append(f"methods not implemented: {', '.join(missing)}")
    absent = [a for a in Emitter.REQUIRED if not hasattr(cls, a)]
    if absent:
        problems.append(f"attributes not set: {', '.join(absent)}")
    if hasattr(cls, "OPS"):
        ops = sorted(ir.OPS.keys() - cls.OPS.keys())
        if ops:
            problems.append(f"IR ops without a template: {', '.join(ops)}")
    if hasattr(cls, "PRELUDE"):
        path = Path(cls.PRELUDE)
        if not path.is_file():
            problems.append(f"prelude {path} does not exist")
        else:
            defined = Prelude(path).names()
            wanted = [*getattr(cls, "BASE", ()), *getattr(cls, "CONDITIONAL", ()),
                      *getattr(cls, "EMBEDDING", ()), *cls.UNCONDITIONAL, *cls.SHAPES,
                      *cls.IMAGE]  # fmt: skip
            wanted += [n for names in cls.OP_HELPERS.values() for n in names]
            wanted += [n for names in cls.FIELD_HELPERS.values() for n in names]
            undefined = sorted(set(wanted) - defined)
            if undefined:
                problems.append(f"prelude definitions not found: {', '.join(undefined)}")
    if problems:
        raise ContractError(f"backend {where}: " + "; ".join(problems))


# ------------------------------------------------------------------------ runtime
@runtime_checkable
class Runtime(Protocol):
    """What the conformance check and the in-process builders need of a backend's
    ``runtime`` module (functions at module level; arrays in and out are NumPy)."""

    def prepare(self) -> None:
        """Set the framework up once before use (a quiet import, say)."""

    def layers_of(self, flow: Any) -> list:
        """The layers of a built flow, in application order."""

    def devices(self) -> list[str]:
        """The devices flows can run on here."""

    def unavailable_devices(self) -> dict[str, str]:
        """{device: why not} for the devices of :data:`DEVICES` not available."""

    def precise(self) -> None:
        """Switch off reduced-precision shortcuts (TF32) for correctness checks."""

    def make(self, module: ModuleType, params: Any, *options: Any) -> Any:
        """The flow of the loaded generated ``module`` with checked neutral ``params``
        (None: its own initial weights); the backend's own options follow (Pyro: dtype,
        device, validate_args; TFP: dtype, data_format, validate_args)."""

    def build(self, module: ModuleType, params: Any, dtype: str, device: str) -> Any:
        """A flow from the loaded generated ``module``, in evaluation mode."""

    def training(self, flow: Any) -> Any:
        """``flow`` with its layers in training mode."""

    def forward(self, flow: Any, x: Any, context: Any = None) -> tuple:
        """(y, log-det) as NumPy arrays, any cache bypassed."""

    def inverse(self, flow: Any, y: Any, context: Any = None) -> tuple:
        """(x, log-det) as NumPy arrays, any cache bypassed."""

    def round_trip(self, flow: Any, x: Any, context: Any = None) -> Any:
        """inverse(forward(x)) as a NumPy array, through the public calls."""

    def jacobian_log_det(self, flow: Any, x: Any, context: Any = None) -> Any:
        """log|det J| of the forward map per row, from the framework's Jacobian."""


RUNTIME_API: tuple[str, ...] = tuple(
    n for n in Runtime.__dict__ if not n.startswith("_") and callable(Runtime.__dict__[n])
)


def check_runtime(module: ModuleType, name: str = "") -> None:
    """Raise :class:`ContractError` naming each :class:`Runtime` function ``module``
    lacks."""
    missing = [f for f in RUNTIME_API if not callable(getattr(module, f, None))]
    if missing:
        where = name or module.__name__
        raise ContractError(f"backend {where}: runtime functions missing: {', '.join(missing)}")
