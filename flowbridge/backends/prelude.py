"""What every backend's generated module shares, whatever its framework: pure Python,
inlined into generated modules from this source (see
:class:`flowbridge.backends.contract.Prelude`), never imported by them."""

from __future__ import annotations


def _per_layer(table, count):
    """``table`` (neutral names -> values) as one {local name: value} dict per layer."""
    out = [{} for _ in range(count)]
    for key, value in table.items():
        head, index, local = (str(key).split(".", 2) + ["", ""])[:3]
        if head == "layers" and index.isdigit() and int(index) < count:
            out[int(index)][local] = value
    return out


def _under(table, prefix):
    """The entries of ``table`` whose names start with ``prefix``, named by the rest."""
    return {str(k)[len(prefix) :]: v for k, v in table.items() if str(k).startswith(prefix)}
