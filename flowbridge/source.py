"""Pieces of Python source shared by the code generator and every backend's emitter:
literals written as ruff formats them, calls and signatures wrapped to the line length,
and the method texts every backend's layer classes share. Imports no backend."""

from __future__ import annotations

import math
from typing import Any

from .layers import WEIGHT_KINDS, EmbeddingPlan, Plan
from .spec import FlowSpec

WIDTH = 99  # the generated code's line length


# --------------------------------------------------------------------- formatting
def literal(value: Any, indent: int = 0, used: int = 0, width: int = WIDTH) -> str:
    """A Python literal for ints, floats, strings, lists, tuples and dicts, wrapped so
    no line passes ``width`` (long lists break after commas, continued one level in).
    ``indent`` is the line's indentation, ``used`` what precedes the literal on it."""
    flat = _flat(value)
    if indent + used + len(flat) + 1 <= width or not isinstance(value, (list, tuple, dict)):
        return flat
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        items = [f"{_flat(k)}: {literal(v, indent + 4, len(_flat(k)) + 2)}" for k, v in value.items()]
        return "{\n" + "".join(f"{pad}{item},\n" for item in items) + " " * indent + "}"
    open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
    lines, line = [], ""
    for item in (_flat(v) for v in value):
        candidate = f"{line} {item}," if line else f"{item},"
        if len(pad) + len(candidate) > width and line:
            lines.append(line)
            candidate = f"{item},"
        line = candidate
    lines.append(line)
    return open_ + "\n" + "".join(f"{pad}{ln}\n" for ln in lines) + " " * indent + close


def number(value: float) -> str:
    """A float literal as ``ruff format`` writes it (``1e308``, not ``1e+308``). Refuses
    infinity and NaN: no such literal can reach generated code."""
    if not math.isfinite(value):
        raise ValueError(f"cannot write the non-finite constant {value!r} into generated code")
    return repr(float(value)).replace("e+", "e")


def _flat(value: Any) -> str:
    if isinstance(value, str):
        return py_str(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        return number(value)
    if isinstance(value, list):
        return "[" + ", ".join(_flat(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(_flat(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flat(k)}: {_flat(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as a literal")


def call(name: str, args: dict, raw: dict[str, str], indent: int) -> str:
    """``name(k=v, ...)`` on one line when it fits, else one argument per line.
    ``args`` values are literals; ``raw`` values are expressions written as they are."""
    items = [f"{k}={_flat(v)}" for k, v in args.items()] + [f"{k}={v}" for k, v in raw.items()]
    flat = f"{name}({', '.join(items)})"
    if indent + len(flat) + 1 <= WIDTH:
        return flat
    pad = " " * (indent + 4)
    lines = [f"{pad}{k}={literal(v, indent + 4, len(k) + 1)}," for k, v in args.items()]
    lines += [f"{pad}{k}={v}," for k, v in raw.items()]
    return f"{name}(\n" + "\n".join(lines) + "\n" + " " * indent + ")"


def py_str(text: str) -> str:
    """A Python string literal, double-quoted unless that needs more escapes (as black)."""
    plain = repr(text)
    if plain.startswith("'") and '"' not in text:
        return '"' + plain[1:-1].replace("\\'", "'") + '"'
    return plain


def block(lines: list[str], level: int) -> str:
    """``lines`` indented by ``level`` levels of four spaces."""
    pad = "    " * level
    return "\n".join(pad + line if line else "" for line in lines)


def neutral_params_method(plan: Plan | EmbeddingPlan, conv_kernel: str = "kernel") -> str:
    """The ``neutral_params`` method: the same text in every backend (a layer's dense
    weights are ``conditioner.{j}.*``, the context embedding's ``{j}.*``), but for
    ``conv_kernel``, the expression that gives a convolution kernel in the neutral
    ``(k, k, in, out)`` layout (a view, so loading into it writes the stored weight)."""
    lines = ["def neutral_params(self):", '    """This layer\'s weights under their neutral names."""']
    if isinstance(plan, EmbeddingPlan):
        return block(lines + [
            "    params = {}",
            "    for j, (kernel, bias) in enumerate(zip(self.kernels, self.biases, strict=True)):",
            '        params[f"{j}.kernel"] = kernel',
            '        params[f"{j}.bias"] = bias',
            "    return params",
        ], 1)  # fmt: skip
    kinds = {f.kind: f for f in plan.fields}
    if not set(WEIGHT_KINDS) & kinds.keys():
        return block(lines + ["    return {}"], 1)
    lines.append("    params = {}")
    if "dense" in kinds or "conv" in kinds:
        kernel = conv_kernel if "conv" in kinds else "kernel"
        lines += [
            "    for j, (kernel, bias) in enumerate(zip(self.kernels, self.biases, strict=True)):",
            f'        params[f"conditioner.{{j}}.kernel"] = {kernel}',
            '        params[f"conditioner.{j}.bias"] = bias',
        ]
    for f in plan.fields:
        if f.kind in WEIGHT_KINDS and f.kind not in ("dense", "conv"):
            lines.append(f'    params["{f.name}"] = self.{f.name}')
    return block(lines + ["    return params"], 1)


def changes_shape(spec: FlowSpec, calls: list[tuple[str, dict]]) -> bool:
    """Whether the flow's output event shape (its last layer's) differs from its input's;
    the module then has an ``OUTPUT_SHAPE`` constant."""
    last = calls[-1][1]
    return tuple(last.get("output_shape", last["event_shape"])) != tuple(spec.event_shape)


def embed_methods(plan: EmbeddingPlan, body: list[str]) -> str:
    """The context embedding's traced ``_embed`` and its ``neutral_params``: the same
    text in every backend (each template writes its own constructor and public call)."""
    return "\n".join([
        "    def _embed(self, context):",
        '        """The features of a checked context. Generated from flowbridge.layers."""',
        *("        " + ln for ln in body),
        "        return features",
        "",
        neutral_params_method(plan),
    ])  # fmt: skip


def signature(name: str, params: list[str], level: int) -> str:
    """``def name(params):`` indented ``level`` levels; one parameter a line if too long."""
    indent = "    " * level
    flat = f"{indent}def {name}({', '.join(params)}):"
    if len(flat) <= WIDTH:
        return flat
    pad = indent + "    "
    return f"{indent}def {name}(\n" + "".join(f"{pad}{p},\n" for p in params) + indent + "):"


def traced_methods(
    forward: list[str],
    inverse: list[str],
    note: str,
    context: bool = False,
    training: list[str] | None = None,
    methods: tuple[str, ...] = (),
) -> str:
    """``methods`` (the class's called sub-functions, such as its conditioner, each a
    whole method text), then ``_forward_with_log_det`` and ``_inverse_with_log_det`` with
    traced bodies (taking
    the context too when the layer reads one); the template's public
    ``forward_with_log_det``/``inverse_with_log_det`` check the inputs and call them. A
    layer with a training mode (``training``: that mode's body) has the forward of each
    mode, and ``_forward_with_log_det`` picks one by ``self.training``."""
    extra, given = (", context", " and context") if context else ("", "")
    modes = []
    if training is not None:
        modes = [
            "def _forward_with_log_det(self, x):",
            '    """The training-mode forward in training mode, else the evaluation one."""',
            "    if self.training:",
            "        return self._forward_training(x)",
            "    return self._forward_evaluation(x)",
            "",
            "def _forward_training(self, x):",
            '    """(y, log|det dy/dx|) from the batch\'s statistics, which move the running',
            f'    averages. {note}"""',
            *("    " + ln for ln in training),
            "    return y, log_det",
            "",
        ]
    name = "_forward_evaluation" if training is not None else "_forward_with_log_det"
    called = "".join(m + "\n\n" for m in methods)
    return called + block(
        [
            *modes,
            f"def {name}(self, x{extra}):",
            f'    """(y, log|det dy/dx|) for a checked x{given}. {note}"""',
            *("    " + ln for ln in forward),
            "    return y, log_det",
            "",
            f"def _inverse_with_log_det(self, y{extra}):",
            f'    """(x, log|det dx/dy|) for a checked y{given}. {note}"""',
            *("    " + ln for ln in inverse),
            "    return x, log_det",
        ],
        1,
    )
