"""Errors raised by flowbridge before any framework code runs."""

from __future__ import annotations


class SpecError(ValueError):
    """A flow specification is malformed.

    The message starts with the path of the offending field, e.g.
    ``layers[3].conditioner.hidden[1]: expected a positive integer, got -4``.
    ``errors`` holds every ``(path, message)`` pair found, not only the first.
    """

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.errors = errors or []


class ParamError(ValueError):
    """A parameter set does not fit its spec (missing, extra, wrong shape or dtype).

    The message names the parameter, e.g.
    ``layers.0.conditioner.1.kernel: expected shape (64, 4), got (4, 64)``.
    """


class BackendUnavailable(ImportError):
    """An optional framework is not installed; the message names the extra to install."""
