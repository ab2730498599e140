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
napoleon_use_ivar = True  # Attributes as fields: no cross-reference targets named "type"

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


def _pydantic_signature(app, what, name, obj, options, signature, return_annotation):
    """A spec model's signature is its fields, each with pydantic's metadata types; its
    docstring's Attributes section documents them instead, so the class shows none."""
    from pydantic import BaseModel

    if what in ("class", "exception") and isinstance(obj, type) and issubclass(obj, BaseModel):
        return "", None
    return None


def setup(app):
    app.connect("autodoc-process-signature", _pydantic_signature)
