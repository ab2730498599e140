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
    """A backend that does not implement the contract; the message names each part.

    Raised by :func:`check_emitter` and :func:`check_runtime` (which run when the
    registry hands a backend's emitter or runtime out), and by :class:`Prelude` for a
    definition its module lacks, before any code is generated. A subclass of
    ``TypeError``.

    Example:
        >>> import types
        >>> from flowbridge.backends.contract import ContractError, check_runtime
        >>> try:
        ...     check_runtime(types.ModuleType("bare"), "mine")
        ... except ContractError as error:
        ...     print(error)
        backend mine: runtime functions missing: prepare, layers_of, devices, ...
    """


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

    A backend's prelude is a real module (imported, linted and unit-tested) whose
    definitions are *inlined* into generated modules from its source, definition by
    definition, so those stay standalone. ``names()`` gives every name it defines at top
    level, ``imports()`` its import statements as written, and ``source(names)`` the
    definitions called ``names``, in that order, two blank lines apart (a
    :class:`ContractError` for a name it does not define).

    Args:
        path: the module's file (``str`` or ``pathlib.Path``).

    Example:
        >>> from pathlib import Path
        >>> from flowbridge.backends import prelude
        >>> from flowbridge.backends.contract import Prelude
        >>> shared = Prelude(Path(prelude.__file__))
        >>> "_under" in shared.names(), shared.source(["_under"]).splitlines()[0]
        (True, 'def _under(table, prefix):')
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
    "div": "{0} / {1}",
    "neg": "-{0}",
    "less": "{0} < {1}",
    "less_equal": "{0} <= {1}",
    "slice": "{0}[{index}]",
    "per_channel": "{0}[:, None, None]",
    "conv2d": "_conv2d({0}, {1}, {2})",
    "matmul": "{0} @ {1}",
    "batch_mean": "_batch_mean({0}, {event_ndims})",
    "squeeze2x2": "_squeeze2x2({0})",
    "unsqueeze2x2": "_unsqueeze2x2({0})",
    "call": "self.{method}({args})",
    "loop": "_repeat(self.{method}, {count}, {args})",
}


#: Every kind of layer field (``flowbridge.layers.Field``): each emitter's ``FIELD_INIT``
#: says how its framework stores each one.
FIELD_KINDS: tuple[str, ...] = (
    "dense", "conv", "constant", "vector", "channel", "state", "index", "int", "matrix",
)  # fmt: skip


class Emitter(abc.ABC):
    """A backend's code generator: the declared interface ``flowbridge.codegen`` uses.

    Class attributes (all required unless a default is shown):

    - ``TITLE``: the framework's words in a generated module's docstring.
    - ``USAGE`` / ``CONDITIONAL_USAGE``: how to use a (conditional) generated module;
      ``{event_ndims}`` and ``{context_dim}`` are filled in.
    - ``IMAGE_SHAPES``: the shape convention of an image flow's module.
    - ``IMPORTS`` / ``CONDITIONAL_IMPORTS``: the framework imports a (conditional)
      generated module starts with.
    - ``FIELD_INIT``: field kind (one of ``FIELD_KINDS``) -> the constructor statement(s)
      that store a field of that kind (``{name}``, ``{shape}``); ``field_init(kind)``
      reads it, refusing a kind it does not hold by name.
    - ``OPS``: IR op -> expression template (``{0}``, ``{1}``: arguments; ``{name}``:
      attributes); must cover every op of :data:`flowbridge.ir.OPS`.
    - ``OP_IMPORTS``: op -> a standard-library import it needs (default none).
    - ``CONSTANT``: the ``__init__`` statement that stores a constant built once from
      the layer's constant buffers (``{name}``, ``{value}``; a checkerboard's mask):
      a non-persistent buffer in Pyro, so ``state_dict`` keys never change.
    - ``IN_PLACE``, ``SPLIT``: optional peepholes, as data (see
      ``flowbridge.codegen.emit_body``); ``None`` where the framework has none.
    - ``CONV_LAYOUT``: an optional peephole for a framework whose convolution runs
      channels last: ``(input layout, output layout) -> template`` of a ``conv2d``, each
      layout ``"first"`` or ``"last"``. A sub-function made of convolutions and
      elementwise ops between them (a ResNet conditioner) then computes channels last
      inside, transposing once at its input and once at its output
      (``flowbridge.codegen.conv_layouts``); ``None``: every convolution takes and gives
      channels first.
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

    A subclass implements :meth:`layer_class`, :meth:`embedding_class` and
    :meth:`flow_code`; :meth:`effect`, :meth:`shape_arg` and :meth:`domain_lines` have
    defaults. :func:`check_emitter` checks a subclass against this contract. The registry
    hands out one instance per backend (``emitter()`` of a
    :class:`flowbridge.backends.Backend`).

    Example:
        >>> from flowbridge import backends, ir
        >>> emitter = backends.get("numpy").emitter()
        >>> type(emitter).__name__, emitter.OPS["exp"], emitter.OPS["add"]
        ('NumpyEmitter', 'np.exp({0})', '{0} + {1}')
        >>> set(ir.OPS) <= set(emitter.OPS)  # a template for every IR op
        True
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
    CONV_LAYOUT: ClassVar[dict[tuple[str, str], str] | None] = None
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
        "FIELD_INIT",
    )  # fmt: skip

    def field_init(self, kind: str):
        """The ``FIELD_INIT`` entry of a field ``kind``.

        Raises:
            ContractError: the backend stores no field of that kind (the message names
                the kind and the kinds it stores).
        """
        if kind not in self.FIELD_INIT:
            raise ContractError(f"{type(self).__name__}: no field of kind {kind!r}: it stores "
                                f"{', '.join(self.FIELD_INIT)}")  # fmt: skip
        return self.FIELD_INIT[kind]

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
        """The class-body lines that state a layer's input domain, if it is not the reals.

        For a layer whose input is not any real vector: its
        ``domain_interval = (low, high)`` (the prelude's ``_Layer`` has ``None``, the
        reals), against which the prelude checks the input (always in the reference, when
        validating in a framework), then a blank line; none where ``plan.domain`` is
        ``"real"``. The interval comes from ``DOMAINS``.

        Args:
            plan: the layer's :class:`flowbridge.layers.Plan`.

        Returns:
            ``list[str]``: the lines, indented for a class body; empty for a real domain.

        Raises:
            KeyError: ``plan.domain`` is neither ``"real"`` nor a key of ``DOMAINS``.

        Example:
            >>> import flowbridge as fb
            >>> from flowbridge.backends import get
            >>> from flowbridge.layers import plan_flow
            >>> spec = fb.realnvp_image((3, 4, 4), num_scales=1, blocks=1, channels=4, logit=0.05)
            >>> logit, coupling = plan_flow(spec)[:2]
            >>> emitter = get("numpy").emitter()
            >>> emitter.domain_lines(logit), emitter.domain_lines(coupling)
            (['    domain_interval = (0.0, 1.0)  # unit_interval', ''], [])
        """
        if plan.domain == "real":
            return []
        low, high = self.DOMAINS[plan.domain]
        return [f"    domain_interval = ({low!r}, {high!r})  # {plan.domain}", ""]

    @staticmethod
    def shape_arg(plan: Any) -> str:
        """The constructor argument that gives a plan's "vector" field its shape.

        A layer acting on the active channels of an image (after a factor-out) has an
        ``active_shape`` argument; every other layer's vector fields take the
        ``event_shape``.

        Args:
            plan: the layer's :class:`flowbridge.layers.Plan`.

        Returns:
            ``str``: ``"active_shape"`` or ``"event_shape"``.

        Example:
            >>> import flowbridge as fb
            >>> from flowbridge.backends.contract import Emitter
            >>> from flowbridge.layers import plan_flow
            >>> plans = plan_flow(fb.realnvp_image((3, 8, 8), num_scales=2, blocks=1, channels=4))
            >>> Emitter.shape_arg(plans[0]), Emitter.shape_arg(plans[-1])  # after a factor-out
            ('event_shape', 'active_shape')
        """
        return "active_shape" if "active_shape" in plan.args else "event_shape"

    @staticmethod
    def field_shape(plan: Any, field: Any) -> str:
        """The shape expression of a ``"vector"`` field in a plan's constructor: the
        event's (:meth:`shape_arg`), or the constructor argument ``field.shape`` names
        where the field has a shape of its own (an unconditional spline's raw widths).

        Example:
            >>> import flowbridge as fb
            >>> from flowbridge.backends.contract import Emitter
            >>> from flowbridge.layers import plan_flow
            >>> plan = plan_flow(fb.FlowSpec(event_shape=(2,), layers=[fb.ElementwiseSpline()]))[0]
            >>> [Emitter.field_shape(plan, f) for f in plan.fields]
            ['bins_shape', 'bins_shape', 'inner_shape']
        """
        shape = Emitter.shape_arg(plan)
        return field.shape or shape

    def effect(self, op: str, args: list[str]) -> str:
        """The statement for one state update (an IR effect such as ``assign``).

        By default the op's template from ``OPS``, filled with ``args``; a functional
        backend overrides it to return the new value instead of writing in place.

        Args:
            op: the effect's IR op (``"assign"``; see ``flowbridge.ir.EFFECTS``).
            args: the printed arguments, in order (for ``assign``: the state, then the
                new value).

        Returns:
            ``str``: one line of code.

        Raises:
            KeyError: ``op`` has no template in ``OPS``.

        Example:
            >>> from flowbridge.backends import get
            >>> get("numpy").emitter().effect("assign", ["self.running_mean", "new_mean"])
            'self.running_mean[...] = new_mean'
            >>> get("tfp").emitter().effect("assign", ["self.running_mean", "new_mean"])
            'self.running_mean.assign(new_mean)'
        """
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
        """The source of one layer class called ``name`` for ``plan``.

        The class is written around the bodies the code generator printed from traces of
        the plan's ``forward``, ``inverse`` and (for a layer with a training mode)
        ``training_forward``; it never holds a layer's formula itself. Each body is the
        lines computing ``y`` (or ``x``) and ``log_det`` from ``x`` (or ``y``).

        Args:
            name: the generated class's name.
            plan: the layer's :class:`flowbridge.layers.Plan` (docstring, fields,
                constructor arguments, shapes, domain).
            forward: the printed forward body, one string per line.
            inverse: the printed inverse body.
            training: the printed training-mode forward body, for a layer with a
                training mode; ``None`` (the default) otherwise.
            methods: the class's called sub-functions (its conditioner), as source, given
                to ``flowbridge.source.traced_methods``. Default none.
            constants: the lines that end its ``__init__``, building constants once.
                Default none.

        Returns:
            ``str``: the class's source.

        Example:
            >>> import flowbridge as fb
            >>> from flowbridge.backends import get
            >>> from flowbridge.codegen import emit_body, trace
            >>> from flowbridge.layers import plan_flow
            >>> em, plan = get("numpy").emitter(), plan_flow(fb.nice(2, hidden=(4,)))[-1]
            >>> forward = emit_body(trace(plan, "forward")[0], {"self", "x"}, em.OPS)
            >>> inverse = emit_body(trace(plan, "inverse")[0], {"self", "y"}, em.OPS)
            >>> text = em.layer_class("Scaling", plan, forward, inverse)
            >>> print(text.splitlines()[0], "y = x * scale" in text)
            class Scaling(_Layer): True
        """

    @abc.abstractmethod
    def embedding_class(self, plan: Any, body: list[str]) -> str:
        """The source of the ``ContextEmbedding`` class around its printed body.

        A flow with a context embedding applies it once to the context before the
        couplings; the body computes ``features`` from ``context``.

        Args:
            plan: the flow's embedding plan (``flowbridge.layers.plan_embedding``): its
                docstring, constructor arguments (``{"sizes": [...]}``) and parameters.
            body: the printed body, one string per line.

        Returns:
            ``str``: the class's source.

        Example:
            >>> import flowbridge as fb
            >>> from flowbridge.backends import get
            >>> from flowbridge.layers import plan_embedding
            >>> embedding = fb.ContextEmbedding(hidden=(), features=2)
            >>> spec = fb.realnvp(4, hidden=(8,), context_dim=3, context_embedding=embedding)
            >>> body = ["features = np.matmul(context, self.kernels[0]) + self.biases[0]"]
            >>> text = get("numpy").emitter().embedding_class(plan_embedding(spec), body)
            >>> print(text.splitlines()[0], "self.biases[0]" in text)
            class ContextEmbedding: True
        """

    @abc.abstractmethod
    def flow_code(self, spec: Any, calls: list[tuple[str, dict]], embedding: Any = None) -> str:
        """The module's ``build_flow`` (and what it needs that depends on the spec).

        Args:
            spec: the flow's :class:`flowbridge.FlowSpec`.
            calls: each layer's class name and constructor arguments, in order.
            embedding: the flow's embedding plan, or ``None`` (the default) when it has
                no context embedding.

        Returns:
            ``str``: the source of ``build_flow`` and what it needs.

        Example:
            >>> import flowbridge as fb
            >>> from flowbridge.backends import get
            >>> spec = fb.FlowSpec(event_shape=[2], layers=[fb.Scaling()])
            >>> code = get("numpy").emitter().flow_code(spec, [("Scaling", {"event_shape": (2,)})])
            >>> print(code.splitlines()[0])
            def build_flow(params=None, seed=0):
            >>> "Scaling(event_shape=(2,), init=init[0], rng=rng)," in code
            True
        """


def check_emitter(cls: type, name: str = "") -> None:
    """Check an :class:`Emitter` subclass against the backend contract.

    Raises a :class:`ContractError` naming every part of the contract the emitter class
    ``cls`` leaves out: an abstract method, a required attribute, an IR op without a
    template, a prelude definition the prelude does not have. It runs when the registry
    first hands a backend out (``emitter()`` of a :class:`flowbridge.backends.Backend`).

    Args:
        cls: the emitter class (not an instance).
        name: the backend's name for the message; default ``""``: the class's name.

    Raises:
        ContractError: ``cls`` leaves a part out; the message lists every one.

    Example:
        >>> from flowbridge.backends.contract import check_emitter
        >>> from flowbridge.backends.numpy.emit import NumpyEmitter
        >>> check_emitter(NumpyEmitter) is None  # the NumPy reference keeps the contract
        True
        >>> class NoOps(NumpyEmitter):
        ...     OPS = {}
        >>> check_emitter(NoOps, "mine")
        Traceback (most recent call last):
        ...
        flowbridge.backends.contract.ContractError: backend mine: IR ops without a template:
        abs, add, ...
    """
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
    if hasattr(cls, "FIELD_INIT"):
        kinds = [k for k in FIELD_KINDS if k not in cls.FIELD_INIT]
        if kinds:
            problems.append(f"field kinds without a statement: {', '.join(kinds)}")
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
    ``runtime`` module (functions at module level; arrays in and out are NumPy).

    The functions: ``prepare()`` (set the framework up once, a quiet import say),
    ``layers_of(flow)`` (a built flow's layers, in application order), ``devices()`` and
    ``unavailable_devices()`` (``{device: why not}``), ``precise()`` (reduced-precision
    shortcuts such as TF32 off), ``make(module, params, *options)`` and
    ``build(module, params, dtype, device)`` (a flow from a loaded generated module,
    ``build``'s in evaluation mode), ``training(flow)``, ``forward(flow, x, context=None)``
    and ``inverse(flow, y, context=None)`` (output and log-det, any cache bypassed),
    ``round_trip(flow, x, context=None)`` and ``jacobian_log_det(flow, x, context=None)``
    (``log|det J|`` of the forward map per row, from the framework's Jacobian), and
    ``saved(module, flow)``/``restored(module, params, state)`` (a flow as plain data and
    back, for pickling: :func:`flowbridge.persist.rebuild`). Shapes:
    ``x`` is ``(*batch, D)`` or ``(*batch, C, H, W)``, log-dets ``(*batch,)``.
    :func:`check_runtime` checks a module against this protocol.

    Example:
        >>> from flowbridge.backends.contract import Runtime, check_runtime
        >>> from flowbridge.backends.numpy import runtime
        >>> check_runtime(runtime) is None, isinstance(runtime, Runtime)
        (True, True)
        >>> runtime.devices()
        ['cpu']
    """

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

    def saved(self, module: ModuleType, flow: Any) -> dict:
        """What a pickled flow keeps beside its spec (``flowbridge.persist``): its
        weights and state under their neutral names, its dtype and build options, as
        plain data."""

    def restored(self, module: ModuleType, params: dict, state: dict) -> Any:
        """The flow of a pickled ``state``: built again from the loaded generated
        ``module`` with the checked ``params`` and the saved options and training mode
        (:func:`flowbridge.persist.rebuild`)."""


RUNTIME_API: tuple[str, ...] = tuple(
    n for n in Runtime.__dict__ if not n.startswith("_") and callable(Runtime.__dict__[n])
)


def check_runtime(module: ModuleType, name: str = "") -> None:
    """Check a backend's ``runtime`` module against the :class:`Runtime` protocol.

    Raises a :class:`ContractError` naming each :class:`Runtime` function ``module``
    lacks. It runs whenever a backend's runtime is asked for (``runtime()`` of a
    :class:`flowbridge.backends.Backend`).

    Args:
        module: the backend's ``runtime`` module.
        name: the backend's name for the message; default ``""``: the module's name.

    Raises:
        ContractError: a :class:`Runtime` function is missing or not callable.

    Example:
        >>> from flowbridge.backends.contract import check_runtime
        >>> from flowbridge.backends.numpy import runtime
        >>> check_runtime(runtime, "numpy") is None
        True
    """
    missing = [f for f in RUNTIME_API if not callable(getattr(module, f, None))]
    if missing:
        where = name or module.__name__
        raise ContractError(f"backend {where}: runtime functions missing: {', '.join(missing)}")
