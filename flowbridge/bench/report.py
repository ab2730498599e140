"""The benchmark's report: the Markdown document and the files of one run.

Each preset module renders its own section from the rows its workers returned
(:func:`flowbridge.bench.vector.markdown`, :func:`flowbridge.bench.peers.markdown`,
:func:`flowbridge.bench.image.markdown`); this module puts them together. It imports the
preset modules; none of them imports it.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import image, peers, vector


def markdown(results: dict) -> str:
    """The whole report: the image preset's own, or the vector sizes and the peers."""
    if results["preset"] == "image":
        return image.markdown(results)
    return "\n".join(vector.markdown(results) + peers.markdown(results)) + "\n"


def write(results: dict, out: Path) -> None:
    """``{preset}.json``, ``{preset}.md`` and, where matplotlib is installed, the plots
    (``{preset}.png``, ``{preset}_peers.png``) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    name = results["preset"]
    (out / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown(results))
    try:
        if name == "image":
            image.plot(results, out / f"{name}.png")
            return
        vector.plot(results, out / f"{name}.png")
        peers.plot(results, out / f"{name}_peers.png")
    except ImportError:
        pass
