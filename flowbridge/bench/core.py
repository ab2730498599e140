"""What every benchmark preset shares: the timing loop, the benchmarked flow, the machine.

Each timing warms up, then takes the median of repeated runs of as many calls as fill
``--min-time``, all implementations of one process interleaved round by round (a drift in
the machine's speed, or a first-run effect, favours none of them). The worker modules
(:mod:`~flowbridge.bench.vector`, :mod:`~flowbridge.bench.image`,
:mod:`~flowbridge.bench.peers`) import this one; it imports none of them.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path


def timeit_many(fns: dict, repeats: int, min_time: float) -> list[dict]:
    """Time several ``{(impl, op): fn}`` interleaved: every round runs each once, so a
    drift in the machine's speed (or a first-run effect) does not favour one of them."""
    counts = {key: _calibrate(fn, repeats, min_time) for key, fn in fns.items()}
    runs: dict = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            for _ in range(counts[key]):
                fn()
            runs[key].append((time.perf_counter() - start) / counts[key])
    return [{"impl": impl, "op": op, "seconds": statistics.median(r)}
            for (impl, op), r in runs.items()]  # fmt: skip


def _calibrate(fn, repeats: int, min_time: float, warmup: int = 2) -> int:
    """Warm up, then the number of calls that makes one run last min_time / repeats."""
    for _ in range(warmup):
        fn()
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start >= min_time / max(repeats, 1) or n >= 1024:
            return n
        n *= 2


def flow_and_params(cfg: dict, scale: str):
    """The benchmarked architecture as a spec, with random non-identity weights.

    Couplings pass the first ``D // 2`` entries (Pyro's ``split_dim``, TFP's
    ``num_masked``), conditioners are ``D//2 -> hidden -> hidden -> 2 (D - D//2)`` with
    ReLU, seeded random permutations sit between couplings. ``scale`` is ``clamp`` (Pyro's
    [-5, 3]), ``exp`` (TFP's), ``sigmoid`` (offset 2, as nflows) or ``additive`` (NICE
    couplings, conditioners ``D//2 -> hidden -> hidden -> D - D//2``). The last dense layer
    is drawn 10x smaller than the others so that log-densities stay finite at every size
    (timing NaNs would time nothing).
    """
    import numpy as np

    import flowbridge as fb

    dim, c, h, context = cfg["dim"], cfg["couplings"], cfg["hidden"], cfg.get("context", 0)
    layers = []
    for i in range(c):
        parts = {"mask": fb.SplitMask(part="first", size=dim // 2),
                 "conditioner": fb.Conditioner(hidden=(h, h), activation="relu")}  # fmt: skip
        if scale == "additive":
            layers.append(fb.AdditiveCoupling(**parts))
        else:
            maps = {"clamp": fb.ClampScale, "exp": fb.ExpScale, "sigmoid": fb.SigmoidScale}
            layers.append(fb.AffineCoupling(**parts, scale=maps[scale]()))
        if i < c - 1:
            perm = tuple(int(v) for v in np.random.default_rng(i).permutation(dim))
            layers.append(fb.Permutation(kind="explicit", indices=perm))
    spec = fb.FlowSpec(name="bench", event_shape=(dim,), context_dim=context, layers=layers)
    params = fb.init_params(spec, 0, init="random")
    for name in params:
        if ".conditioner.2." in name:
            params[name] = params[name] * 0.1
    return spec, {k: v.astype(np.float32) for k, v in params.items()}


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()}  # fmt: skip
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info
