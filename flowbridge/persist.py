"""Flows that pickle and load in a new process.

A generated module lives only in the process that generated it (``sys.modules`` under
``flowbridge_generated.*``), so a flow pickled by reference to its class could not be
loaded anywhere else. Every flow that :func:`flowbridge.to_pyro`, :func:`~flowbridge.to_tfp`,
:func:`~flowbridge.to_jax` or :func:`~flowbridge.to_numpy` builds therefore pickles as
*what it is made of*: its spec (JSON), its backend, its dtype and build options, and its
weights and batch-norm state under their neutral names, stamped with the flowbridge
version that saved it. Unpickling calls :func:`rebuild`, which generates the module again
from the spec and loads the weights back, bit for bit. ``torch.save``/``torch.load``,
``pickle``, ``copy.deepcopy``, ``cloudpickle`` and sbi's saved posteriors all take this
path; the loading process needs flowbridge and the backend's framework installed.

Decisions:

- The pickled state holds plain data only (strings, numbers, dicts, and the weights as
  the framework's tensors for Pyro, NumPy arrays otherwise), so a Pyro flow also loads
  with ``torch.load(f, weights_only=True)`` once :func:`rebuild` is allowed:
  ``torch.serialization.add_safe_globals(fb.persist.SAFE_GLOBALS)``, or
  ``torch.load(f, weights_only=False)`` for a file you trust. Pyro weights keep their
  device, so ``torch.load(..., map_location="cpu")`` moves a CUDA flow as usual.
- A flow pickles whole (the object ``to_*`` returned, conditional and embedded flows
  included). A single layer taken out of a flow (``flow[0]``) or a Pyro flow
  conditioned at a context (``flow.condition(c)``) is not a saved flow: save the flow.
- Another flowbridge version rebuilds a pickled flow if it still reads the spec and the
  weights fit; otherwise :class:`PersistError` names both versions and why.
"""

from __future__ import annotations

import copyreg
import importlib.metadata
import sys
from typing import Any

from . import backends, codegen
from .errors import ParamError, SpecError
from .params import check_params

#: The layout of the pickled state; a state of another format is refused by name.
FORMAT = 1

#: The prefix of every generated module's name in ``sys.modules``.
_GENERATED = "flowbridge_generated."


class PersistError(ValueError):
    """A pickled flow this flowbridge cannot rebuild: saved by another version whose
    spec or weights no longer fit, or a state of an unknown format. The message names
    the version that saved it, this version, and why. A subclass of ``ValueError``.

    Example:
        >>> import flowbridge as fb
        >>> try:
        ...     fb.persist.rebuild({"format": 99, "flowbridge": "9.0", "backend": "numpy"})
        ... except fb.persist.PersistError as error:
        ...     print(error)  # doctest: +ELLIPSIS
        cannot rebuild a numpy flow saved by flowbridge 9.0 with flowbridge ...: its state
        has format 99, this version reads format 1
    """


def _version() -> str:
    """This flowbridge's version, from its installed metadata (not by importing the
    package, which imports this module)."""
    try:
        return importlib.metadata.version("flowbridge")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def backend_of(flow: Any) -> str | None:
    """The backend whose generated module defines ``flow``'s class, or None."""
    module = type(flow).__module__
    if not module.startswith(_GENERATED):
        return None
    name = module[len(_GENERATED) :].rsplit("_", 1)[0]
    return name if name in backends.NAMES else None


def register(flow: Any) -> Any:
    """Make ``flow``'s class pickle through :func:`rebuild` (once per class) and
    return ``flow``. The builders (``fb.to_pyro``, ...) call it on every flow they
    return; a class that no generated module defines is left as it is."""
    cls = type(flow)
    if backend_of(flow) is not None and copyreg.dispatch_table.get(cls) is not _reduce:
        copyreg.pickle(cls, _reduce)
    return flow


def _reduce(flow: Any) -> tuple:
    backend = backend_of(flow)
    module = sys.modules[type(flow).__module__]
    state = {
        "format": FORMAT,
        "flowbridge": _version(),
        "backend": backend,
        "spec": module.SPEC_JSON,
        "spec_hash": module.SPEC_HASH,
        **backends.get(backend).runtime().saved(module, flow),
    }
    return rebuild, (state,)


def rebuild(state: dict) -> Any:
    """The flow a pickled state describes (what unpickling a flowbridge flow calls).

    Generates the flow's module again from the saved spec (or takes it from this
    process's module cache), builds the flow in the saved dtype with the saved build
    options, and loads the saved weights and batch-norm state, bit for bit.

    Args:
        state: the pickled state: ``format``, ``flowbridge`` (the version that saved it),
            ``backend``, ``spec`` (the spec's JSON), ``spec_hash``, and the backend's own
            entries (``dtype``, ``params``, build options, ``training``).

    Returns:
        The rebuilt flow, of the class the backend's ``to_*`` returns.

    Raises:
        PersistError: the state's format is unknown, or this version cannot read its
            spec or fit its weights (the message names both versions).
        BackendUnavailable: the backend's framework is not installed here.

    Example:
        >>> import pickle
        >>> import numpy as np
        >>> import flowbridge as fb
        >>> spec = fb.realnvp(3, num_couplings=2, hidden=(8,))
        >>> flow = fb.to_numpy(spec, fb.init_params(spec, 0, init="random"))
        >>> data = pickle.dumps(flow)  # spec, weights and version, no generated class
        >>> b"flowbridge_generated" in data
        False
        >>> x = np.ones((2, 3))
        >>> bool(np.array_equal(pickle.loads(data).forward(x), flow.forward(x)))
        True
    """
    from .spec import FlowSpec

    saved_by, backend = state.get("flowbridge", "?"), state.get("backend", "?")
    where = (f"cannot rebuild a {backend} flow saved by flowbridge {saved_by} with "
             f"flowbridge {_version()}")  # fmt: skip
    if state.get("format") != FORMAT:
        raise PersistError(f"{where}: its state has format {state.get('format')!r}, "
                           f"this version reads format {FORMAT}")  # fmt: skip
    runtime = backends.get(backend).runtime()
    try:
        spec = FlowSpec.from_json(state["spec"])
        module = codegen.loaded(backend, spec.hash) or codegen.load(
            codegen.generate(spec, backend), backend, spec.hash)  # fmt: skip
        params = check_params(spec, state["params"], module.PARAM_SHAPES)
        return register(runtime.restored(module, params, state))
    except (SpecError, ParamError, KeyError) as error:
        raise PersistError(f"{where}: {error}") from error


#: What ``torch.load(..., weights_only=True)`` must be allowed to call to load a saved
#: Pyro flow: ``torch.serialization.add_safe_globals(fb.persist.SAFE_GLOBALS)``.
SAFE_GLOBALS = [rebuild]
