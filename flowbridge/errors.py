"""Errors raised by flowbridge before any framework code runs."""

from __future__ import annotations


class SpecError(ValueError):
    """A flow specification is malformed (a ``ValueError``).

    Raised when a spec is read, built or validated (:class:`flowbridge.FlowSpec`,
    :func:`flowbridge.load_spec`, the builders), before any framework code runs. The
    message names the path of the offending field, e.g.
    ``layers[3].conditioner.hidden[1]: expected a positive integer, got -4``; when
    several fields are wrong it reads ``N errors:`` followed by one such line each.

    Attributes:
        errors: every ``(path, message)`` pair found, not only the first; a list of
            tuples of two strings (empty when the error was raised without them).

    Example:
        >>> import flowbridge as fb
        >>> try:
        ...     fb.FlowSpec.from_dict({"event_shape": [-4], "layers": "x"})
        ... except fb.SpecError as err:
        ...     for path, message in err.errors:
        ...         print(f"{path}: {message}")
        event_shape[0]: expected a positive integer, got -4
        layers: expected a list, got 'x'
    """

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.errors = errors or []


class ParamError(ValueError):
    """A parameter set does not fit its spec (missing, extra, wrong shape or dtype).

    A ``ValueError``, raised before any framework code runs by
    :func:`flowbridge.check_params` and every function that takes parameters (the
    builders, :func:`flowbridge.load_params`, ...). The message names the parameter, e.g.
    ``layers.0.conditioner.1.kernel: expected shape (64, 4), got (4, 64)``.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
        >>> params = {**fb.init_params(spec), "layers.0.conditioner.0.kernel": np.zeros((8, 2))}
        >>> try:
        ...     fb.to_numpy(spec, params)
        ... except fb.ParamError as err:
        ...     print(err)
        layers.0.conditioner.0.kernel: expected shape (2, 8), got (8, 2)
    """


class BackendUnavailable(ImportError):
    """An optional framework is not installed; the message names the extra to install.

    An ``ImportError``, raised by the builders (:func:`flowbridge.to_pyro`,
    :func:`flowbridge.to_tfp`, :func:`flowbridge.module_for`, :func:`flowbridge.check`)
    when the backend's framework is missing, e.g. ``the pyro backend needs torch, pyro:
    pip install 'flowbridge[pyro]'``. The NumPy reference is always available.

    Example:
        >>> import flowbridge as fb
        >>> issubclass(fb.BackendUnavailable, ImportError)
        True
        >>> from flowbridge import backends
        >>> backends.get("numpy").available()  # a core dependency: never unavailable
        True
    """
