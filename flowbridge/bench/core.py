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


def torch_peak_bytes(step) -> int:
    """The peak memory one call of ``step()`` adds to what was live when it began (a
    training step: activations, gradients, temporaries), in bytes, from PyTorch's own
    accounting: ``torch.profiler`` with ``profile_memory=True``, its memory timeline."""
    import json
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:  # fmt: skip
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    totals = [sum(row) for row in sizes]
    return int(max(totals) - totals[0]) if totals else 0


def tf_peak_bytes(step, device: str = "CPU:0") -> int:
    """The peak memory one call of ``step()`` adds to what was live when it began, in
    bytes, from TensorFlow's allocator statistics (``tf.config.experimental``'s
    ``reset_memory_stats`` and ``get_memory_info``).

    TensorFlow keeps CPU statistics only with some allocators: on a CPU without AVX-512
    its default keeps none ("Cannot reset memory stats"). The TF workers set
    ``TF_CPU_ALLOCATOR_USE_BFC=true`` before importing it, so every machine measures
    with its BFC allocator."""
    import tensorflow as tf

    try:
        tf.config.experimental.reset_memory_stats(device)
    except ValueError as err:  # TensorFlow's "Cannot reset memory stats"
        raise RuntimeError(f"TensorFlow keeps no allocator statistics for {device}: set "
                           "TF_CPU_ALLOCATOR_USE_BFC=true before importing it") from err  # fmt: skip
    before = tf.config.experimental.get_memory_info(device)["current"]
    step()
    return int(tf.config.experimental.get_memory_info(device)["peak"] - before)


def xla_temp_bytes(jitted, *args) -> int:
    """XLA's temporary memory of a jitted JAX function compiled for ``args``, in bytes
    (``compiled.memory_analysis().temp_size_in_bytes``: what it allocates beyond its
    arguments and outputs)."""
    return int(jitted.lower(*args).compile().memory_analysis().temp_size_in_bytes)


def train_peaks(todo: dict, measure) -> dict:
    """{impl: bytes}: ``measure`` (:func:`torch_peak_bytes` or :func:`tf_peak_bytes`) of
    each ``(impl, "train")`` call of ``todo``, each called once just before (its
    optimizer's state made, its function traced: the steady state is measured). Run
    before the timing, so that consecutive calls of one step alternate their inputs, as
    they do when timed (Pyro's caches never answer)."""
    peaks = {}
    for (impl, op), fn in todo.items():
        if op == "train":
            fn()
            peaks[impl] = measure(fn)
    return peaks


#: How each worker group measures a training step's peak memory.
ACCOUNTING = {"torch": "torch.profiler memory timeline", "tf": "TensorFlow allocator peak",
              "jax": "XLA temporary memory"}  # fmt: skip


def memory_lines(runs: list[dict], against: dict) -> list[str]:
    """Markdown lines: the peak memory of one training step of each implementation in
    ``runs`` (MiB), the framework's own accounting named, and its ratio to
    ``against[impl]`` where both were measured in one process (an XLA-compiled step's
    allocator is not an eager one's); none where the runs measured none (results saved
    before)."""
    peaks, group = {}, {}
    for run in runs:
        for impl, size in run["info"].get("train_peak_bytes", {}).items():
            peaks[impl], group[impl] = size, run["group"]
    if not peaks:
        return []
    lines = ["", "Peak memory of one training step beyond what was live before it (weights "
             "and inputs), MiB, from each framework's own accounting (compare within a "
             "framework only):", "", "| impl | train peak (MiB) | accounting |",
             "| --- | --- | --- |"]  # fmt: skip
    for impl, size in peaks.items():
        other = against.get(impl, impl)  # a ratio only within one process's accounting
        same = other != impl and group.get(other) == group[impl] and peaks[other] > 0
        ratio = f" ({size / peaks[other]:.2f}x)" if same else ""
        how = ACCOUNTING[group[impl].split("-")[0]]
        lines.append(f"| {impl} | {size / 2**20:.1f}{ratio} | {how} |")
    return lines


def interleaved(n: int):
    """Columns that turn flowbridge's ``[shift | s]`` conditioner output into
    ``[shift_0, s_0, shift_1, s_1, ...]`` (zuko's, normflows' and flowjax's order)."""
    import numpy as np

    return np.stack([np.arange(n), n + np.arange(n)], -1).reshape(-1)


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
