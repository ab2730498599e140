"""The parent process: which workers a preset runs, each in a process of its own.

The parent imports no framework. For each size it starts one worker process per framework
(``python -m flowbridge.bench --worker GROUP CONFIG ...``, :mod:`flowbridge.bench.__main__`)
with its thread count set, and reads back the rows the worker prints on its ``BENCH``
line. :func:`worker_main` is that worker's side: it hands the size to the preset module
that times it (:mod:`~flowbridge.bench.vector`, :mod:`~flowbridge.bench.image` or
:mod:`~flowbridge.bench.peers`). This module imports those; none of them imports it.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

from . import image, peers, vector
from .core import machine
from .report import write


def configs(preset: str) -> list[dict]:
    """``quick``: the target size only; ``axes``: the target and every one-axis change
    (12 sizes); ``grid``: the full product of the axes (180 sizes, hours on 2 cores);
    ``conditional``: the target size with a context (:data:`~flowbridge.bench.vector.CONDITIONAL`);
    ``image``: the RealNVP image flow against hand-written ones (:mod:`flowbridge.bench.image`);
    ``peers``: the target size against zuko, nflows and normflows only
    (:mod:`flowbridge.bench.peers`; ``quick`` runs them too where they are installed)."""
    target, axes = vector.TARGET, vector.AXES
    if preset in ("quick", "peers"):
        return [dict(target)]
    if preset == "image":
        return [dict(image.IMAGE)]
    if preset == "conditional":
        return [dict(vector.CONDITIONAL)]
    if preset == "axes":
        out = [dict(target)]
        for axis, values in axes.items():
            out += [{**target, axis: v} for v in values if v != target[axis]]
        return out
    if preset == "grid":
        return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    raise ValueError(
        f"preset: expected quick, axes, grid, conditional, image or peers, got {preset!r}"
    )


def worker_main(argv: list[str]) -> None:
    """A worker process: time one group at one size, print the rows on a ``BENCH`` line."""
    group, cfg, threads, repeats, min_time, compile_ = argv[0], json.loads(argv[1]), *map(float, argv[2:6])
    if group == "torch-peers":
        rows, info = peers.torch_worker(cfg, int(threads), int(repeats), min_time)
    elif "image" in cfg:
        worker = image.torch_worker if group.startswith("torch") else image.tf_worker
        rows, info = worker(cfg, int(threads), int(repeats), min_time)
    else:
        worker = {"torch": vector.torch_worker, "tf": vector.tf_worker,
                  "jax": vector.jax_worker}[group.split("-")[0]]  # fmt: skip
        rows, info = worker(cfg, int(threads), int(repeats), min_time, bool(compile_))
    print("BENCH " + json.dumps({"rows": rows, "info": info}))


def _run_worker(group: str, cfg: dict, threads: int, repeats: int, min_time: float,
                compile_: bool) -> dict:  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}  # fmt: skip
    cmd = [sys.executable, "-m", "flowbridge.bench", "--worker", group, json.dumps(cfg),
           str(threads), str(repeats), str(min_time), str(int(compile_))]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("BENCH ")]
    if run.returncode != 0 or not lines:
        raise RuntimeError(f"{group} worker failed for {cfg}:\n{run.stderr[-3000:]}")
    return json.loads(lines[-1][6:])


def run(preset: str = "quick", *, threads: int = 2, repeats: int = 7, min_time: float = 0.5,
        out: Path | None = None, compile_at: str = "target") -> dict:  # fmt: skip
    """Run a preset and return (and, with ``out``, write) the results."""
    from tqdm import tqdm

    sizes = configs(preset)
    results = {"preset": preset, "machine": machine(), "threads": threads, "repeats": repeats,
               "min_time": min_time, "dtype": "float32", "runs": []}  # fmt: skip
    jobs = []
    with_peers = any(peers.installed().values())
    for cfg in sizes:
        if preset == "peers" or (preset == "quick" and with_peers):
            jobs.append((cfg, "torch-peers"))
        if preset == "peers":
            continue
        jobs += [(cfg, "torch"), (cfg, "tf")]
        if "image" not in cfg and importlib.util.find_spec("jax") is not None:
            jobs.append((cfg, "jax"))  # jit-compiled at every size
        if cfg.get("context") or "image" in cfg:  # eager and tf.function (image: and XLA)
            continue
        if compile_at == "all" or (compile_at == "target" and cfg == vector.TARGET):
            jobs += [(cfg, "torch-compile"), (cfg, "tf-xla")]  # each in a process of its own
    for cfg, group in tqdm(jobs, desc=f"bench {preset}", unit="job"):
        compile_ = group in ("torch-compile", "tf-xla")
        got = _run_worker(group, cfg, threads, repeats, min_time, compile_)
        results["runs"].append({"config": cfg, "group": group, **got})
    if out is not None:
        write(results, Path(out))
    return results
