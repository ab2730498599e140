"""The backend registry: every backend flowbridge knows, declared once.

Each backend is a folder with the same modules, whose contract
:mod:`flowbridge.backends.contract` declares and checks:

- ``emit``: an :class:`~flowbridge.backends.contract.Emitter` subclass, the op table
  (IR op -> that framework's call) and the class templates the code generator fills
  in; it never holds a layer's formula;
- ``prelude``: the run-time code generated modules need, as a real module inlined
  into them from its source;
- ``runtime``: what flowbridge itself needs to drive the framework in-process
  (:class:`~flowbridge.backends.contract.Runtime`: tensor conversion, devices,
  Jacobians, cache-free calls, a flow's layers).

and one :class:`Backend` entry in :data:`BACKENDS` saying what it needs and what it can
do. Code generation, the conformance check, building, parameter export and the CLI all
read this table (as Keras 3 picks its backend in one module); none of them lists
backends or branches on a backend's name.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from ..errors import BackendUnavailable
from .contract import ContractError, Emitter, check_emitter, check_runtime

#: Every device name a backend may offer, and every dtype a flow may be built in.
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Backend:
    """One backend and its capabilities: an entry of the registry.

    Code generation, the conformance check, building, parameter export and the CLI all
    read the registry's entries (:func:`get`); none of them lists backends or branches on
    a backend's name. ``available()`` says whether the frameworks are installed (importing
    nothing), ``require()`` raises :class:`flowbridge.BackendUnavailable` naming the extra
    unless they are, ``emitter()`` gives the backend's
    :class:`~flowbridge.backends.contract.Emitter` (checked against the contract the first
    time, importing no framework) and ``runtime()`` its checked ``runtime`` module, once
    the framework is known to be installed (see
    :class:`~flowbridge.backends.contract.Runtime`).

    Attributes:
        name: the CLI's and the API's word (``--backend pyro``): ``"numpy"``, ``"pyro"``,
            ``"tfp"`` or ``"jax"``; also the backend's folder under ``flowbridge/backends/``.
        modules: what must be importable to run it (``("torch", "pyro")``).
        extra: the pip extra that installs ``modules`` (``None``: a core dependency).
        dtypes: the dtypes its flows are built in (``("float32", "float64")``).
        autodiff: Jacobians by automatic differentiation (else finite differences).
        reference: whether it is the float64 reference every other backend is checked
            against. Default ``False``.

    Example:
        >>> from flowbridge import backends
        >>> reference = backends.get("numpy")
        >>> reference.name, reference.dtypes, reference.reference, reference.autodiff
        ('numpy', ('float64',), True, False)
        >>> reference.available(), type(reference.emitter()).__name__
        (True, 'NumpyEmitter')
    """

    name: str  # the CLI's and the API's word (``--backend pyro``)
    modules: tuple[str, ...]  # what must be importable to run it
    extra: str | None  # the pip extra that installs ``modules`` (None: core dependency)
    dtypes: tuple[str, ...]  # the dtypes its flows are built in
    autodiff: bool  # Jacobians by automatic differentiation (else finite differences)
    reference: bool = False  # the float64 reference every other backend is checked against

    def available(self) -> bool:
        """Whether the frameworks are installed (imports nothing)."""
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def require(self) -> None:
        """Raise :class:`BackendUnavailable`, naming the extra, unless installed."""
        missing = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if missing:
            raise BackendUnavailable(
                f"the {self.name} backend needs {', '.join(missing)}: "
                f"pip install 'flowbridge[{self.extra}]'"
            )

    def emitter(self) -> Emitter:
        """The backend's :class:`~flowbridge.backends.contract.Emitter`, the one
        subclass its ``emit`` module defines, checked against the contract the first
        time it is asked for (imports no framework)."""
        return _emitter(self.name)

    def runtime(self) -> ModuleType:
        """``flowbridge.backends.<name>.runtime``, once the framework is known to be
        installed and the module checked against the contract; its ``prepare()`` runs
        first (TensorFlow's quiet import, say)."""
        self.require()
        module = importlib.import_module(f"{__name__}.{self.name}.runtime")
        check_runtime(module, self.name)
        module.prepare()
        return module


@functools.cache
def _emitter(name: str) -> Emitter:
    module = importlib.import_module(f"{__name__}.{name}.emit")
    found = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, Emitter)
             and c is not Emitter and c.__module__ == module.__name__]  # fmt: skip
    if len(found) != 1:
        raise ContractError(f"backend {name}: its emit module must define one Emitter "
                            f"subclass, found {len(found)}")  # fmt: skip
    check_emitter(found[0], name)
    return found[0]()


#: name -> backend, the reference first (the order of the check's rows).
BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("numpy", ("numpy",), None, ("float64",), autodiff=False, reference=True),
        Backend("pyro", ("torch", "pyro"), "pyro", ("float32", "float64"), autodiff=True),
        Backend("tfp", ("tensorflow", "tensorflow_probability"), "tfp",
                ("float32", "float64"), autodiff=True),  # fmt: skip
        Backend("jax", ("jax",), "jax", ("float32", "float64"), autodiff=True),
    )
}
NAMES = tuple(BACKENDS)
REFERENCE = next(b.name for b in BACKENDS.values() if b.reference)


def get(name: str) -> Backend:
    """The backend called ``name``; a ValueError naming the choices otherwise.

    Looks the name up only: whether the backend's frameworks are installed is
    :class:`Backend`'s ``available()`` and ``require()``.

    Args:
        name: ``"numpy"`` (the float64 reference), ``"pyro"`` or ``"tfp"``.

    Returns:
        :class:`Backend`: the registry's entry.

    Raises:
        ValueError: ``name`` is not a backend; the message names the choices.

    Example:
        >>> from flowbridge import backends
        >>> backends.get("pyro").modules, backends.get("pyro").extra
        (('torch', 'pyro'), 'pyro')
        >>> backends.get("mxnet")
        Traceback (most recent call last):
        ...
        ValueError: backend: expected one of numpy, pyro, tfp, jax, got 'mxnet'
    """
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(NAMES)}, got {name!r}")
    return BACKENDS[name]
