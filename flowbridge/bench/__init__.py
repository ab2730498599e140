"""Benchmarks: flowbridge against native Pyro and TFP, hand-written image flows and the
PyTorch peers, each framework timed in a process of its own (``flowbridge bench``).

The modules, each importing only those listed before it:

- :mod:`~flowbridge.bench.core`: the interleaved timing loop, the benchmarked vector
  flow (:func:`~flowbridge.bench.core.flow_and_params`), the machine's description;
- :mod:`~flowbridge.bench.vector`, :mod:`~flowbridge.bench.image`,
  :mod:`~flowbridge.bench.peers`: one preset family each: its sizes, its workers (run in
  the worker processes, where the frameworks are imported) and its part of the report;
- :mod:`~flowbridge.bench.report`: the Markdown document and the files of a run;
- :mod:`~flowbridge.bench.runner`: the presets' sizes, the worker processes, :func:`run`;
- ``__main__``: the worker process's entry point (``python -m flowbridge.bench --worker``).
"""

from __future__ import annotations

from .report import markdown, write
from .runner import configs, run

__all__ = ["configs", "markdown", "run", "write"]
