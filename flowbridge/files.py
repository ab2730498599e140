"""Writing files safely: atomically, and never over one of the command's own inputs."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place, so an
    interrupted write never leaves a truncated file (the old file stays until the rename).
    Raises ``OSError`` (missing directory, full disk) with the old file untouched."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    if path.exists() and not path.is_file():  # a device or pipe (/dev/stdout): write through
        try:
            with path.open("wb") as f:
                f.write(payload)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        return
    if not path.parent.is_dir():
        raise FileNotFoundError(2, "no such directory", str(path.parent))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not exc.filename:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name one file (through links and relative paths)."""
    a, b = Path(a), Path(b)
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def clashes(output: str | Path, inputs: Iterable[str | Path | None]) -> str | None:
    """The first of ``inputs`` that ``output`` would overwrite, or ``None``."""
    for item in inputs:
        if item is not None and same_file(output, item):
            return str(item)
    return None
