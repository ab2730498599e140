"""The flowbridge package's modules import one another without a cycle.

Every module is parsed with ``ast`` (nothing is imported) and its imports of flowbridge
modules are collected wherever they sit: at the top, deferred inside functions, relative
or absolute, and the targets of ``importlib.import_module`` calls. A package's
``__init__`` is a module of its own (``flowbridge.backends``); ``from . import x`` imports
the submodule ``x`` where there is one, and the package's ``__init__`` otherwise.

Rules that keep the graph conservative:

- an ``import_module`` target given as an f-string matches every module that the
  string can name: ``{__name__}`` is the calling module's name, ``{__package__}`` its
  package, any other field one or more dotted names, so
  ``f"{__name__}.{self.name}.emit"`` in ``flowbridge/backends/__init__.py`` imports every
  ``flowbridge.backends.<name>.emit`` that exists;
- a dynamic import the rules cannot resolve fails :func:`test_dynamic_imports_resolve`
  instead of being left out of the graph;
- imports under ``if TYPE_CHECKING:`` are left out (they never run); so are the parent
  packages Python initialises on the way to a submodule (they are already being
  imported when one of their submodules is).

The no-framework import of ``flowbridge`` is tested in ``test_cli.py``
(``test_import_flowbridge_loads_no_framework``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flowbridge"


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} of every module under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _walk(node: ast.AST):
    """Every node below ``node``, except the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        yield child
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _walk(other)
            continue
        yield from _walk(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_import_module(func: ast.expr) -> bool:
    """``importlib.import_module``, ``import_module`` or ``__import__``."""
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def _relative(base: str, level: int, package: str) -> str:
    """``from {'.' * level}{base} import ...`` inside ``package``, as an absolute name."""
    if not level:
        return base
    anchor = package.split(".")
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join([*anchor, base] if base else anchor)


def _dynamic_targets(call: ast.Call, name: str, package: str, modules) -> set[str] | None:
    """The modules an ``import_module(...)`` call can load; None where the rules cannot tell."""
    if not call.args:
        return None
    arg = call.args[0]
    anchor = package
    if len(call.args) > 1 or call.keywords:  # import_module(".x", package=...)
        given = call.args[1] if len(call.args) > 1 else call.keywords[0].value
        names = {"__name__": name, "__package__": package}
        if isinstance(given, ast.Constant) and isinstance(given.value, str):
            anchor = given.value
        elif isinstance(given, ast.Name) and given.id in names:
            anchor = names[given.id]
        else:
            return None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        level = len(arg.value) - len(arg.value.lstrip("."))
        target = _relative(arg.value[level:], level, anchor) if level else arg.value
        return {target} if target in modules else None
    if not isinstance(arg, ast.JoinedStr):
        return None
    pattern = ""
    for part in arg.values:
        if isinstance(part, ast.Constant):
            pattern += re.escape(str(part.value))
        elif isinstance(part.value, ast.Name) and part.value.id == "__name__":
            pattern += re.escape(name)
        elif isinstance(part.value, ast.Name) and part.value.id == "__package__":
            pattern += re.escape(package)
        else:
            pattern += r"[\w.]+"
    if pattern.startswith(r"\."):  # a relative f-string: against the anchor, one level
        pattern = re.escape(anchor) + pattern
    found = {m for m in modules if re.fullmatch(pattern, m)}
    return found or None


def imports_of(source: str, name: str, is_package: bool, modules) -> tuple[set[str], list[str]]:
    """The modules of ``modules`` that module ``name`` imports, and the dynamic imports in
    it that the rules cannot resolve (as source text)."""
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    unresolved = []
    for node in _walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _relative(node.module or "", node.level, package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules else base)
        elif isinstance(node, ast.Call) and _is_import_module(node.func):
            found = _dynamic_targets(node, name, package, modules)
            if found is None:
                unresolved.append(ast.unparse(node))
            else:
                targets |= found
    return {t for t in targets if t in modules and t != name}, unresolved


def import_graph(root: Path = PACKAGE) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """{module: modules it imports} over the package, and {module: unresolved imports}."""
    files = module_files(root)
    graph, unresolved = {}, {}
    for name, path in files.items():
        graph[name], left = imports_of(path.read_text(), name, path.name == "__init__.py", files)
        if left:
            unresolved[name] = left
    return graph, unresolved


def find_cycles(graph: dict[str, set[str]], limit: int = 200) -> list[list[str]]:
    """The graph's elementary cycles, each starting and ending at its smallest module
    (``[a, b, a]``), at most ``limit`` of them."""
    cycles: list[list[str]] = []
    order = sorted(graph)
    for i, start in enumerate(order):
        allowed = set(order[i:])  # the cycles whose smallest module is ``start``

        def visit(node, path, start=start, allowed=allowed):
            for nxt in sorted(graph.get(node, ())):
                if len(cycles) >= limit:
                    return
                if nxt == start:
                    cycles.append([*path, start])
                elif nxt in allowed and nxt not in path:
                    visit(nxt, [*path, nxt])

        visit(start, [start])
    return cycles


# --------------------------------------------------------------------------- the tests
def test_collector_sees_every_kind_of_import():
    modules = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.backends", "pkg.backends.x",
               "pkg.backends.x.emit", "pkg.backends.y", "pkg.backends.y.emit",
               "pkg.backends.y.runtime"}  # fmt: skip
    source = (
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "from .. import a\n"
        "from . import helper\n"  # a name of the package's __init__: the package itself
        "if TYPE_CHECKING:\n"
        "    from ..c import C\n"
        "def emit(self):\n"
        "    from ..b import thing\n"
        "    return importlib.import_module(f'{__name__}.{self.name}.emit')\n"
        "def runtime(self, where):\n"
        "    importlib.import_module(where)\n"
    )
    found, unresolved = imports_of(source, "pkg.backends", True, modules)
    assert found == {"pkg.a", "pkg.b", "pkg.backends.x.emit", "pkg.backends.y.emit"}
    assert unresolved == ["importlib.import_module(where)"]
    found, _ = imports_of("import pkg.a\nfrom .b import f\n", "pkg.c", False, modules)
    assert found == {"pkg.a", "pkg.b"}


def test_find_cycles_names_each_cycle_once():
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"b", "c"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "a"], ["b", "c", "b"], ["c", "c"]]


def test_dynamic_imports_resolve():
    """Every ``import_module`` call in the package is in the graph, none left out."""
    _, unresolved = import_graph()
    assert not unresolved, unresolved


def test_no_import_cycles():
    graph, _ = import_graph()
    cycles = [" -> ".join(cycle) for cycle in find_cycles(graph)]
    for line in cycles:
        print(line)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


#: flowbridge.bench's layers: a module imports only bench modules of lower layers.
BENCH_LAYERS = {"core": 0, "vector": 1, "image": 1, "peers": 1, "report": 2, "runner": 3,
                "": 4, "__main__": 4}  # fmt: skip


def test_bench_modules_import_only_lower_layers():
    """The presets import the shared core, the report and the runner import the presets,
    never the reverse."""
    graph, _ = import_graph()
    bench = {m for m in graph if m == "flowbridge.bench" or m.startswith("flowbridge.bench.")}
    assert {m.removeprefix("flowbridge.bench").lstrip(".") for m in bench} == set(BENCH_LAYERS)
    wrong = [f"{m} -> {t}" for m in sorted(bench) for t in sorted(graph[m] & bench)
             if BENCH_LAYERS[t.removeprefix("flowbridge.bench").lstrip(".")]
             >= BENCH_LAYERS[m.removeprefix("flowbridge.bench").lstrip(".")]]  # fmt: skip
    assert not wrong, wrong
