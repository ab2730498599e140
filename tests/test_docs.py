"""The documentation: every object the API reference shows has a docstring with its
Args, Returns, Raises and a doctested Example (the doctests themselves run as part of
the suite, ``--doctest-modules``), every public name is in the reference, and the site
builds with Sphinx with warnings as errors, nitpicky cross-references and no broken
internal link."""

from __future__ import annotations

import importlib
import inspect
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import flowbridge as fb

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
_DIRECTIVE = re.compile(r"^\.\. auto(function|class|exception|data):: (\S+)", re.M)


def _reference() -> list[tuple[str, str]]:
    """(kind, dotted name) of every object the API reference pages document."""
    found = []
    for page in sorted((DOCS / "api").glob("*.md")):
        found += _DIRECTIVE.findall(page.read_text())
    return found


def _resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError:  # a class's attribute
        owner, _, attr = module.rpartition(".")
        return getattr(getattr(importlib.import_module(owner), attr), name)


def _members(kind: str, dotted: str, obj) -> list[tuple[str, object]]:
    """The object and, for a class, the members its directive lists."""
    out = [(dotted, obj)]
    for page in (DOCS / "api").glob("*.md"):
        m = re.search(rf"^\.\. auto{kind}:: {re.escape(dotted)}\n   :members: (.+)$",
                      page.read_text(), re.M)  # fmt: skip
        if m:
            out += [(f"{dotted}.{n.strip()}", getattr(obj, n.strip())) for n in m[1].split(",")]
    return out


def test_every_public_name_is_in_the_reference():
    documented = {name.rpartition(".")[2] for _, name in _reference() if name.startswith("flowbridge.")}
    missing = sorted(set(fb.__all__) - documented)
    assert not missing, f"in flowbridge.__all__ but not in docs/api/: {missing}"


def _sections(doc: str) -> set[str]:
    return set(re.findall(r"^\s*(Args|Arguments|Attributes|Returns|Yields|Raises|Example|Examples):\s*$",
                          doc, re.M))  # fmt: skip


@pytest.mark.parametrize("kind,dotted", _reference(), ids=[d for _, d in _reference()])
def test_docstring_has_its_sections(kind, dotted):
    obj = _resolve(dotted)
    problems = []
    for name, member in _members(kind, dotted, obj):
        if isinstance(member, property):
            member = member.fget
        doc = inspect.getdoc(member) or ""
        if kind == "data":
            continue  # a ``#:`` comment documents data; Sphinx fails the build without one
        sections = _sections(doc)
        if not doc:
            problems.append(f"{name}: no docstring")
            continue
        if not sections & {"Example", "Examples"} or ">>>" not in doc:
            problems.append(f"{name}: no Example with a doctest")
        if inspect.isfunction(member) or inspect.ismethod(member):
            sig = inspect.signature(member)
            args = [p for p in sig.parameters if p not in ("self", "cls")]
            if args and "Args" not in sections:
                problems.append(f"{name}: no Args")
            returns = sig.return_annotation
            if returns not in (None, "None", inspect.Signature.empty) and not sections & {"Returns", "Yields"}:
                problems.append(f"{name}: no Returns")
        if isinstance(member, type) and not issubclass(member, BaseException):
            init = inspect.signature(member)
            if [p for p in init.parameters if p not in ("self", "args", "kwargs", "data")] \
                    and not sections & {"Args", "Attributes"}:  # fmt: skip
                problems.append(f"{name}: no Args or Attributes")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("dotted", [d for k, d in _reference() if k == "function" and d.startswith("flowbridge.") and d.count(".") == 1])
def test_public_functions_say_what_they_raise(dotted):
    """Every public function that takes input says what it refuses, and how."""
    fn = _resolve(dotted)
    if not inspect.signature(fn).parameters:
        return
    doc = inspect.getdoc(fn) or ""
    assert "Raises" in _sections(doc), f"{dotted}: no Raises section"


def test_the_site_builds_without_warnings_and_its_links_resolve():
    """What the README's docs command runs: warnings are errors, cross-references are
    nitpicky, then every internal link and anchor of the built site is followed (a link
    to a page that does not exist, or to an anchor its page lacks, fails)."""
    pytest.importorskip("sphinx")
    # a folder others can read: run as root, linkchecker drops to an unprivileged user
    site = Path(tempfile.mkdtemp(prefix="flowbridge-docs-"))
    site.chmod(0o755)
    try:
        _build_and_follow(site / "html")
    finally:
        shutil.rmtree(site, ignore_errors=True)


def _build_and_follow(out: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
         str(DOCS), str(out)],
        capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    missing = _missing_anchors(out)
    assert not missing, missing[:20]
    checker = shutil.which("linkchecker", path=str(Path(sys.executable).parent))
    if checker is None:
        pytest.skip("linkchecker is not installed (the docs extra)")
    # internal links only (no network here); the anchors are checked above, each page
    # parsed once (LinkChecker's AnchorCheck parses the target page again for every
    # link into it: 3 minutes for this site, against seconds)
    links = subprocess.run([checker, "--no-status", "-f", str(DOCS / "linkcheckerrc"),
                            str(out / "index.html")], capture_output=True, text=True)  # fmt: skip
    assert links.returncode == 0, links.stdout[-6000:]


class _Anchors(HTMLParser):
    """A built page's element ids (and named anchors) and its links."""

    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.update(v for k, v in attrs.items() if k in ("id", "name") and v)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def _missing_anchors(out: Path) -> list[str]:
    """Every ``page.html#anchor`` (or ``#anchor``) link of the built site whose page has
    no element with that id: ``"from.html -> to.html#anchor"``."""
    pages = {}
    for path in out.rglob("*.html"):
        parser = _Anchors()
        parser.feed(path.read_text(encoding="utf-8"))
        pages[path.resolve()] = parser
    missing = []
    for path, parser in pages.items():
        for href in parser.links:
            target, _, anchor = href.partition("#")
            if not anchor or urlsplit(target).scheme:
                continue  # no anchor, or another site's
            page = (path.parent / unquote(target)).resolve() if target else path
            if page in pages and unquote(anchor) not in pages[page].ids:
                missing.append(f"{path.relative_to(out.resolve())} -> {href}")
    return missing


def test_the_readmes_links_name_files_that_exist():
    """The README links into docs/ by relative path (it is read on the forge, not built)."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme)
    assert targets, "the README links into the docs"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, missing


def _python_blocks(path: Path) -> str:
    """The page's ```python blocks, in order, as one program."""
    return "\n".join(re.findall(r"^```python\n(.*?)^```", path.read_text(), re.M | re.S))


#: Pages whose Python blocks are whole programs (the others quote fragments of a larger
#: program); each runs in its own process, so the frameworks' threads and global state
#: stay out of this one.
RUNNABLE = ["README.md", "docs/getting-started.md", "docs/guides/pyro.md", "docs/guides/tfp.md",
            "docs/guides/jax.md", "docs/guides/sbi.md", "docs/guides/saving.md",
            "docs/guides/images.md", "docs/guides/native.md", "docs/guides/conditional.md",
            "docs/guides/distributed.md", "docs/guides/splines.md",
            "docs/guides/autoregressive.md"]  # fmt: skip


@pytest.mark.parametrize("page", RUNNABLE)
def test_the_pages_code_runs(page, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow_probability")
    if page.endswith("jax.md"):
        pytest.importorskip("numpyro")
    if page.endswith("sbi.md"):
        pytest.importorskip("sbi")
    program = _python_blocks(ROOT / page)
    assert program.strip(), f"{page} has no ```python block"
    for module in ("jax", "numpyro", "sklearn", "sbi"):  # what a page imports, if absent: skip
        if re.search(rf"^\s*(import|from) {module}\b", program, re.M):
            pytest.importorskip(module)
    script = tmp_path / "page.py"
    script.write_text(program)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
