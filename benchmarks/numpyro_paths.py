"""NumPyro's default density paths with a flowbridge transform, against the direct call.

    python benchmarks/numpyro_paths.py --out benchmarks/results          # full run
    python benchmarks/numpyro_paths.py --small --repeats 1 --min-time 0.01 --out DIR  # smoke

NumPyro users write a flow's density as ``TransformedDistribution(base, [t]).log_prob``
(``t`` maps data to noise through its inverse), ``[t.inv]`` (``t`` maps data to noise
forward), or, in NeuTra, ``t(z)`` and then ``log_abs_det_jacobian(z, t(z))``. NumPyro's
transforms keep no cache and pass no intermediates there, so each path asks for the
log-det after the map. A flowbridge transform keeps the log-det of the pair it has just
computed (:class:`flowbridge.numpyro.FlowTransform`); each path is timed with it, with the
same transform made to recompute (no kept pair: the behaviour before it), and against the
direct call (``inverse_with_log_det`` / ``forward_with_log_det`` of the JAX flow, the
floor). Each is jitted; ``value`` is the summed density, ``grad`` its gradient in the
weights (a training step's work). Outputs are checked equal before timing. Also reported:
the matrix products in each gradient's program and XLA's temporary memory of the
compiled gradient (``compiled.memory_analysis()``). The flow: ``fb.realnvp(64, 8
couplings, hidden 256 x 2)``, batch 1024, float32 (``--small``: D 8, 2 couplings, 16 x 2,
batch 32). Timing: :func:`flowbridge.bench.core.timeit_many` (interleaved rounds, medians).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--small", action="store_true", help="a tiny flow (smoke test)")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro.distributions as dist

    import flowbridge as fb
    from flowbridge.bench.core import machine, timeit_many
    from flowbridge.numpyro import FlowTransform

    class Recomputing(FlowTransform):
        """The transform without its kept pair: every log-det runs the flow again."""

        def _keep(self, x, y, log_det):
            self._last = None

    d, couplings, hidden, batch = (8, 2, 16, 32) if args.small else (64, 8, 256, 1024)
    spec = fb.realnvp(d, num_couplings=couplings, hidden=(hidden, hidden))
    flow = fb.to_jax(spec, fb.init_params(spec, seed=0, init="random"))
    base = dist.Normal(jnp.zeros(d), 1.0).to_event(1)
    v = jnp.asarray(np.random.default_rng(0).standard_normal((batch, d)), jnp.float32)

    def inverse_floor(flow, y):
        x, inverse_log_det = flow.inverse_with_log_det(y)
        return jnp.sum(base.log_prob(x) + inverse_log_det)

    def forward_floor(flow, z):
        y, log_det = flow.forward_with_log_det(z)
        return jnp.sum(base.log_prob(y) + log_det)

    def paths(kind):
        def td(flow, y):
            return jnp.sum(dist.TransformedDistribution(base, [kind(flow)]).log_prob(y))

        def td_inv(flow, z):
            return jnp.sum(dist.TransformedDistribution(base, [kind(flow).inv]).log_prob(z))

        def neutra(flow, z):
            t = kind(flow)
            y = t(z)
            return jnp.sum(base.log_prob(y) + t.log_abs_det_jacobian(z, y))

        return {"[t]": td, "[t.inv]": td_inv, "NeuTra": neutra}

    floors = {"[t]": inverse_floor, "[t.inv]": forward_floor, "NeuTra": forward_floor}
    todo, facts = {}, {}
    for name, floor in floors.items():
        for impl, fn in (("flowbridge", paths(FlowTransform)[name]),
                         ("recomputing", paths(Recomputing)[name]), ("direct call", floor)):
            value, grad = jax.jit(fn), jax.jit(jax.grad(fn))
            want = float(floor(flow, v))
            got = float(value(flow, v))
            assert abs(got - want) <= 1e-5 * (1 + abs(want)), (name, impl, got, want)
            todo[(f"{name} {impl}", "value")] = lambda f=value: f(flow, v).block_until_ready()
            todo[(f"{name} {impl}", "grad")] = lambda g=grad: jax.block_until_ready(g(flow, v))
            memory = grad.lower(flow, v).compile().memory_analysis()
            facts[f"{name} {impl}"] = {
                "dots": str(jax.make_jaxpr(jax.grad(fn))(flow, v)).count("dot_general"),
                "temp_bytes": int(getattr(memory, "temp_size_in_bytes", -1)),
            }
    rows = timeit_many(todo, args.repeats, args.min_time)
    seconds = {(r["impl"], r["op"]): r["seconds"] for r in rows}
    lines = [
        "# NumPyro density paths (`python benchmarks/numpyro_paths.py --out benchmarks/results`)",
        "",
        f"`fb.realnvp({d}, num_couplings={couplings}, hidden=({hidden}, {hidden}))`, batch "
        f"{batch}, float32, jitted, medians of {args.repeats} interleaved rounds "
        f"(`--min-time {args.min_time}`); {machine()['cpu']}, JAX {jax.__version__}. "
        "Ratios are against the direct call of the same direction.",
        "",
        "| path | transform | value (ms) | grad (ms) | value ratio | grad ratio | "
        "products in grad | XLA temp (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in floors:
        floor_value = seconds[(f"{name} direct call", "value")]
        floor_grad = seconds[(f"{name} direct call", "grad")]
        for impl in ("flowbridge", "recomputing", "direct call"):
            key = f"{name} {impl}"
            value, grad = seconds[(key, "value")], seconds[(key, "grad")]
            lines.append(f"| {name} | {impl} | {1e3 * value:.2f} | {1e3 * grad:.2f} | "
                         f"{value / floor_value:.2f}x | {grad / floor_grad:.2f}x | "
                         f"{facts[key]['dots']} | {facts[key]['temp_bytes'] / 2**20:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "numpyro_paths.md").write_text("\n".join(lines) + "\n")
    (args.out / "numpyro_paths.json").write_text(json.dumps(
        {"rows": rows, "facts": facts, "machine": machine()}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
