"""Sphinx configuration for flowbridge's documentation site.

Sphinx with the furo theme and MyST Markdown, as zuko's site: the API reference is
generated from the docstrings (Google style, read by napoleon), the command-line
reference from the click commands (sphinx-click). Build it with the README's command,
``.venv/bin/python -m sphinx -W -n -b html docs docs/_build/html``; the test suite runs the
same build with warnings as errors and then follows every internal link
(``tests/test_docs.py``).
"""

from __future__ import annotations

import importlib.util
import re
import sys

import flowbridge

project = "flowbridge"
author = "the flowbridge developers"
copyright = "2026, the flowbridge developers"  # noqa: A001 (Sphinx's name)
release = version = flowbridge.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_click",
    "sphinx_copybutton",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
root_doc = "index"

# MyST: ```{directive} fences, $math$, heading anchors for [text](page.md#anchor) links
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# autodoc: members in source order, type hints in the signature only; napoleon reads the
# Google-style sections (Args, Returns, Raises, Example)
autodoc_member_order = "bysource"
# the adapters' frameworks, mocked where absent, so the docs extra alone builds the site
autodoc_mock_imports = [m for m in ("jax", "numpyro", "sbi", "torch", "pyro")
                        if importlib.util.find_spec(m) is None]
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Attributes as fields (no cross-reference targets named "type"); a spec model's become
# its typed Fields list (_pydantic_fields, below)
napoleon_use_ivar = True

# Nitpicky cross-references (-n): every :func:/:class: reference must resolve. The site
# has no network, so there are no intersphinx inventories: references to other
# libraries' and builtin types (from signatures) are not checked.
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|torch|tf|tensorflow|tfp|pyro|pydantic|typing|types|collections"
               r"|pathlib|abc|contextlib|os|io)(\..*)?"),
    (r"py:.*", r"(Any|Callable|Iterator|Iterable|Mapping|Sequence|Collection|Protocol|"
               r"ModuleType|Path|Literal|Annotated|Self|NDArray|ArrayLike)"),
    # the IR's graph node appears in Value's signature; Value is what a definition uses
    (r"py:class", r"flowbridge\.ir\.Node"),
    (r"py:.*", r"(str|int|float|bool|bytes|dict|list|tuple|set|type|object|None|"
               r"ValueError|TypeError|ImportError|KeyError|OSError|Exception)"),
]

html_theme = "furo"
html_title = f"flowbridge {release}"
html_static_path: list[str] = []
# a fence without a language is text (a diagram, a table the commands print), not Python
highlight_language = "text"
pygments_style = "friendly"
pygments_dark_style = "monokai"


def _is_spec_model(obj) -> bool:
    from pydantic import BaseModel

    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _pydantic_signature(app, what, name, obj, options, signature, return_annotation):
    """A spec model's signature: its fields as keyword-only arguments with their defaults
    (``HalfMask(*, kind='half', part='first', rounding='floor')``), where autodoc would
    show pydantic's ``**data``; their types are in the Fields list below it."""
    if what not in ("class", "exception") or not _is_spec_model(obj):
        return None
    args = [name + ("" if _default(field) is None else f"={_default(field)}")
            for name, field in obj.model_fields.items()]  # fmt: skip
    return f"(*, {', '.join(args)})", None


def _default(field) -> str | None:
    """A field's default as Python source; None for a required field."""
    if field.default_factory is not None:
        return f"{field.default_factory.__name__}()"
    return None if field.is_required() else repr(field.default)


def _type_rst(annotation) -> str:
    """A field's type as reST: ``'first'`` | ``'last'`` for a Literal, the public name of
    a spec model (a link), ``int`` for pydantic's constrained integers, ``tuple of X``."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_rst(args[0])
    if origin is typing.Literal:
        return " | ".join(f"``{v!r}``" for v in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_rst(a) for a in args)
    if origin is tuple:
        item = " | ".join(_type_rst(a) for a in args if a is not Ellipsis)
        return f"tuple of {item}" if Ellipsis in args else f"tuple of ({item})"
    if annotation is type(None):
        return "``None``"
    if _is_spec_model(annotation) and getattr(flowbridge, annotation.__name__, None) is annotation:
        return f":class:`~flowbridge.{annotation.__name__}`"
    return f"``{getattr(annotation, '__name__', annotation)}``"


def _pydantic_fields(app, what, name, obj, options, lines):
    """A spec model's fields, one item each, ``name (type) = default: description``, in
    place of napoleon's "Variables" list (its Attributes section, read before this):
    the description is the docstring's, the type and default pydantic's."""
    if what != "class" or not _is_spec_model(obj):
        return
    described, keep, first, current = {}, [], None, None
    for line in lines:
        item = re.match(r":(ivar|vartype) (\w+): ?(.*)$", line)
        if item and item[2] in obj.model_fields:
            first = len(keep) if first is None else first
            # a field's description; its type is pydantic's, not the docstring's
            current = described.setdefault(item[2], [item[3]]) if item[1] == "ivar" else []
        elif item is None and current is not None and line[:1] == " ":
            current.append(line.strip())
        else:
            current = None
            keep.append(line)
    if first is None:
        first = len(keep)
        keep.append("")
    fields = [":Fields:"]
    for field_name, field in obj.model_fields.items():
        default = _default(field)
        text = f"**{field_name}** ({_type_rst(field.annotation)})"
        text += "" if default is None else f" = ``{default}``"
        words = described.get(field_name)
        fields.append(f"    * {text}" + (f": {words[0]}" if words else ""))
        fields += [f"      {w}" for w in (words or [])[1:]]
    lines[:] = keep[:first] + fields + [""] + keep[first:]


def _reexported_comment(app, what, name, obj, options, lines):
    """A constant re-exported by ``flowbridge`` (``flowbridge.TOLERANCES``) takes the
    ``#:`` comment of the module that defines it, where autodoc looks in ``flowbridge``
    only and would show the value's type's docstring (dict's)."""
    from sphinx.errors import PycodeError
    from sphinx.pycode import ModuleAnalyzer

    if what != "data":
        return
    package, _, attr = name.rpartition(".")

    def comment(module: str) -> list[str] | None:
        try:
            return ModuleAnalyzer.for_module(module).find_attr_docs().get(("", attr))
        except PycodeError:
            return None

    if comment(package) is not None:
        return
    for module_name, module in sorted(sys.modules.items()):
        if module_name.startswith(package + ".") and getattr(module, attr, None) is obj:
            found = comment(module_name)
            if found:
                lines[:] = list(found)
                return


def setup(app):
    app.connect("autodoc-process-signature", _pydantic_signature)
    # before napoleon (priority 500) reads the comment, after it writes the fields
    app.connect("autodoc-process-docstring", _reexported_comment, priority=400)
    app.connect("autodoc-process-docstring", _pydantic_fields, priority=600)
