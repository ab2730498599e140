"""flowbridge-JAX's repeated layers as one ``lax.scan`` against the same flow unrolled.

    python benchmarks/jax_scan.py --out benchmarks/results            # full run
    python benchmarks/jax_scan.py --context 16 --processes 2 --out benchmarks/results  # conditional
    python benchmarks/jax_scan.py --small --processes 1 --repeats 1 --min-time 0.01 --out DIR

A generated JAX flow stores each run of repeated blocks of layers (here a coupling and
its permutation, seven times, then the last coupling, padded with an identity
permutation into an eighth block) with its weights stacked on a leading axis, as flowjax
stores its layers, and inside a trace runs the run as one ``jax.lax.scan`` over them
(the prelude's ``_Sequence``). This script times the flow so (``scan``) against three
other forms of the same flow and weights:

- ``unrolled``: the scan switched off (the generated module's ``_runs`` made to return
  single layers: every layer stored and traced one after the other);
- ``restacked``: the layout before the weights were stored stacked. The optimizer holds
  each layer's weights, and every step stacks them for the scan;
- ``unpadded``: stored stacked, but the last coupling outside the scan (no identity
  padding), as generated before the padding.

Operations, each jitted: ``forward`` (forward and log-det), ``log_prob`` (inverse,
log-det, standard normal base) and ``train`` (the gradient of ``-mean(log_prob)`` and an
Adam step of ``jax.example_libraries.optimizers``). Outputs are checked equal before
timing. Also reported: XLA's temporary memory of each form's compiled training step
(``compiled.memory_analysis()``).

On this project's 2-core machine the unrolled training step's time varies from process
to process (two modes, about 34 and 42 ms), so the comparison runs in ``--processes``
separate processes, each timing both interleaved
(:func:`flowbridge.bench.core.timeit_many`), and the table gives every process's ratio.
The flow: D=64, 8 couplings, hidden 256 x 2, batch 1024, float32, exp scale (the
benchmark's target size, :func:`flowbridge.bench.core.flow_and_params`); ``--small``: D 8,
3 couplings, hidden 16, batch 32. ``--context N``: the conditional flow, every coupling
reading a context of N (results in ``jax_scan_conditional.{md,json}``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

OPS = ("forward", "log_prob", "train")


def worker(small: bool, repeats: int, min_time: float, context: int = 0) -> dict:
    """One process: the four forms timed interleaved; {form: {op: seconds}}, and memory."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.example_libraries import optimizers

    import flowbridge as fb
    from flowbridge.bench.core import flow_and_params, timeit_many

    cfg = {"dim": 8, "couplings": 3, "hidden": 16, "batch": 32} if small else {
        "dim": 64, "couplings": 8, "hidden": 256, "batch": 1024}  # fmt: skip
    cfg["context"] = context
    spec, params = flow_and_params(cfg, "exp")
    flow = fb.to_jax(spec, params)
    module = sys.modules[type(flow).__module__]
    scanned_runs = module._runs
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((cfg["batch"], cfg["dim"])), jnp.float32)
    given = (jnp.asarray(rng.standard_normal((cfg["batch"], context)), jnp.float32),) if context else ()
    half = 0.5 * cfg["dim"] * np.log(2 * np.pi)

    def build(runs, per_layer=False):
        """The jitted calls of one form, traced (and compiled) now, under ``runs``; with
        ``per_layer`` the optimizer holds each layer's weights and the step restacks them."""
        module._runs = runs
        own = module._copied(flow)
        own.layers = flow.layers  # stored again, by ``runs``
        own._packed()

        def as_flow(held):
            if not per_layer:
                return held
            new = module._copied(own)
            new.layers = held  # traced layers: the scan stacks their weights in the step
            return new

        def log_prob(f, v):
            z, ld = as_flow(f).inverse_with_log_det(v, *given)
            return -0.5 * jnp.sum(z**2, -1) - half + ld

        held = list(own.layers) if per_layer else own
        init, update, get = optimizers.adam(1e-5)
        state = [init(held)]

        @jax.jit
        def step(opt, v):
            loss, grads = jax.value_and_grad(lambda f: -jnp.mean(log_prob(f, v)))(get(opt))
            return update(0, grads, opt), loss

        def train():
            state[0], loss = step(state[0], x)
            return jax.block_until_ready(loss)

        forward = jax.jit(lambda f, v: as_flow(f).forward_with_log_det(v, *given))
        lp = jax.jit(log_prob)
        outputs = [forward(held, x), lp(held, x), step(state[0], x)[1]]
        memory = step.lower(state[0], x).compile().memory_analysis()
        scans = str(jax.make_jaxpr(lambda f: log_prob(f, x))(held)).count(" scan[")
        fns = {"forward": lambda: jax.block_until_ready(forward(held, x)),
               "log_prob": lambda: jax.block_until_ready(lp(held, x)), "train": train}  # fmt: skip
        return fns, outputs, {"temp_bytes": int(memory.temp_size_in_bytes), "scans": scans}

    def unpadded_runs(layers):
        """The generated runs with a padded last repeat taken out of the scan."""
        out = []
        for start, period, count, pad in scanned_runs(layers):
            if not pad:
                out.append((start, period, count, 0))
                continue
            out += [(start, period, count - 1, 0)] * (count > 2)
            first = start + period * (count - 1) if count > 2 else start
            out += [(i, 1, 1, 0) for i in range(first, start + period * count - pad)]
        return out

    forms = {"scan": build(scanned_runs),
             "unrolled": build(lambda layers: [(i, 1, 1, 0) for i in range(len(layers))]),
             "restacked": build(scanned_runs, per_layer=True),
             "unpadded": build(unpadded_runs)}  # fmt: skip
    module._runs = scanned_runs
    for form in ("unrolled", "restacked", "unpadded"):
        for a, b in zip(jax.tree_util.tree_leaves(forms["scan"][1]),
                        jax.tree_util.tree_leaves(forms[form][1]), strict=True):  # fmt: skip
            a, b = np.asarray(a), np.asarray(b)
            assert np.abs(a - b).max() <= 1e-4 * (1 + np.abs(b).max()), f"{form} differs"
    assert forms["scan"][2]["scans"] >= 1 and forms["restacked"][2]["scans"] >= 1
    assert forms["unrolled"][2]["scans"] == 0
    todo = {(form, op): fn for form, (fns, _, _) in forms.items() for op, fn in fns.items()
            if form in ("scan", "unrolled") or op == "train"}  # fmt: skip
    rows = timeit_many(todo, repeats, min_time)
    times: dict = {}
    for row in rows:
        times.setdefault(row["impl"], {})[row["op"]] = row["seconds"]
    memory = {form: facts for form, (_, _, facts) in forms.items()}
    return {"times": times, "memory": memory, "jax": jax.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--small", action="store_true", help="a tiny flow (smoke test)")
    parser.add_argument("--context", type=int, default=0, help="a conditional flow's context size")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("SCAN " + json.dumps(worker(args.small, args.repeats, args.min_time, args.context)))
        return

    from flowbridge.bench.core import machine

    runs = []
    for _ in range(args.processes):
        cmd = [sys.executable, __file__, "--worker", "--repeats", str(args.repeats),
               "--min-time", str(args.min_time), "--context", str(args.context)]
        cmd += ["--small"] * args.small  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(next(ln for ln in out.splitlines() if ln.startswith("SCAN "))[5:]))
    size = "D=8, 3 couplings, hidden 16, batch 32" if args.small else (
        "D=64, 8 couplings, hidden 256 x 2, batch 1024")  # fmt: skip
    size += f", every coupling reading a context of {args.context}" if args.context else ""
    name = "jax_scan_conditional" if args.context else "jax_scan"
    lines = [
        "# flowbridge-JAX: repeated layers scanned or unrolled "
        f"(`python benchmarks/jax_scan.py{f' --context {args.context}' if args.context else ''} "
        f"--processes {args.processes} --out benchmarks/results`)",
        "",
        f"{size}, float32, jitted; each row one process timing the four forms interleaved "
        f"(medians of {args.repeats} rounds, `--min-time {args.min_time}`); "
        f"{machine().get('cpu', '?')}, JAX {runs[0]['jax']}. Milliseconds per call, and the "
        "scanned form's time over the unrolled one's.",
        "",
        "| process | " + " | ".join(f"{op}: scan / unrolled" for op in OPS)
        + " | train: scan / restacked | train: scan / unpadded |",
        "| --- |" + " --- |" * (len(OPS) + 2),
    ]
    for k, run in enumerate(runs, 1):
        cells = []
        for op in OPS:
            a, b = run["times"]["scan"][op], run["times"]["unrolled"][op]
            cells.append(f"{1e3 * a:.2f} / {1e3 * b:.2f} ({a / b:.2f}x)")
        for form in ("restacked", "unpadded"):
            a, b = run["times"]["scan"]["train"], run["times"][form]["train"]
            cells.append(f"{1e3 * a:.2f} / {1e3 * b:.2f} ({a / b:.2f}x)")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    memory = runs[0]["memory"]
    lines += ["", "`scan`: the flow as generated (weights stored stacked, the last coupling "
              "scanned with an identity permutation); `restacked`: the stored layout before, each "
              "layer's weights stacked in every step; `unpadded`: stored stacked, the last "
              "coupling outside the scan. XLA temporary memory of the compiled training step: "
              + ", ".join(f"{form} {memory[form]['temp_bytes'] / 2**20:.1f} MiB ("
                          f"{memory[form]['temp_bytes']:,} bytes)" for form in memory) + "."]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"{name}.json").write_text(json.dumps({"runs": runs, "machine": machine()},
                                                       indent=1) + "\n")  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
