"""Each step of the eager Pyro speed-up, measured by taking it back out.

    python benchmarks/variants.py > benchmarks/profiles/pyro_variants.txt

Generates the Pyro module of the benchmark's target flow (D=64, 8 couplings, hidden 256,
clamped scales), then edits its text to undo one step at a time:

- ``no-flow``: ``build_flow`` returns a plain ``ComposeTransformModule`` of the layers
  (Pyro calls each layer, and recomputes the intermediates for the log-det);
- ``no-in-place``: ``torch.relu`` instead of ``torch.relu_`` after the dense layers;
- ``no-split``: two slices instead of one ``split`` for each cut in two;
- ``no-clamp-fast``: the straight-through clamp's three ops also without a gradient;
- ``before``: all four undone (the generated code of the previous release).

All variants and native Pyro run in one process, 2 threads, interleaved round by round
(``flowbridge.bench.core.timeit_many``), fresh input copies each call (no cache answers).
"""

from __future__ import annotations

import itertools
import re
import sys
import types

import pyro.distributions as dist
import torch

import flowbridge as fb
from flowbridge.bench.core import flow_and_params, timeit_many
from flowbridge.bench.peers import _ops, _Peer, _with_log_det
from flowbridge.bench.vector import TARGET, native_pyro

SPLIT = re.compile(r"^(\s+)(\w+), (\w+) = (\w+)\.split\(\[([^,]+), [^\]]+\], dim=(-\d)\)$", re.M)
CLAMP_FAST = """    if not (x.requires_grad and torch.is_grad_enabled()):
        return x.clamp(low, high)  # no gradient to pass: the clamp alone
"""


def undo(code: str, step: str) -> str:
    if step == "no-flow":
        return code.replace("flow = Flow(layers)", "flow = ComposeTransformModule(layers)")
    if step == "no-in-place":
        return code.replace("torch.relu_(", "torch.relu(")
    if step == "no-split":
        def slices(m):
            pad, a, b, src, k, axis = m.groups()
            tail = ", :" * (-int(axis) - 1)
            return f"{pad}{a} = {src}[..., :{k}{tail}]\n{pad}{b} = {src}[..., {k}:{tail}]"

        return SPLIT.sub(slices, code)
    if step == "no-clamp-fast":
        assert CLAMP_FAST in code
        return code.replace(CLAMP_FAST, "")
    if step == "before":
        for s in ("no-flow", "no-in-place", "no-split", "no-clamp-fast"):
            code = undo(code, s)
        return code
    return code


def main(repeats: int = 7, min_time: float = 0.5) -> None:
    torch.set_num_threads(2)
    spec, params = flow_and_params(dict(TARGET), "clamp")
    dim, b = TARGET["dim"], TARGET["batch"]
    code = fb.generate(spec, "pyro")
    flows = {}
    for step in ("current", "no-flow", "no-in-place", "no-split", "no-clamp-fast", "before"):
        module = types.ModuleType(step)
        exec(compile(undo(code, step), step, "exec"), module.__dict__)  # noqa: S102
        flows[step] = module.build_flow(params)
    flows["native-pyro"] = native_pyro(spec, params, TARGET["hidden"])
    xs = [torch.randn(b, dim) for _ in range(2)]
    counter = itertools.count()

    def x():
        return xs[next(counter) % 2].clone()

    with torch.no_grad():
        want = flows["native-pyro"](xs[0].clone())
        for name, flow in flows.items():
            assert torch.allclose(flow(xs[0].clone()), want, rtol=1e-4, atol=1e-4), name
    todo = {}
    for name, flow in flows.items():  # the peers' four timed calls, on each variant
        d = dist.TransformedDistribution(dist.Normal(torch.zeros(dim), 1.0).to_event(1), [flow])
        calls = _Peer(flow, lambda x, flow=flow: _with_log_det(flow, x), d.log_prob,
                      lambda n, d=d: d.sample((n,)))  # fmt: skip
        for op, fn in _ops(calls, x, b).items():
            todo[(name, op)] = fn
    table: dict = {}
    for row in timeit_many(todo, repeats, min_time):
        table.setdefault(row["impl"], {})[row["op"]] = row["seconds"]
    native = table["native-pyro"]
    print(f"D={dim}, 8 couplings, hidden 256, batch {b}; torch {torch.__version__}, 2 threads;"
          f" median of {repeats}; ms per call (ratio to native Pyro)")  # fmt: skip
    print(f"{'variant':14s}" + "".join(f"{op:>20s}" for op in native))
    for name, ops in table.items():
        cells = "".join(f"{s * 1e3:12.2f} ({s / native[op]:.3f})" for op, s in ops.items())
        print(f"{name:14s}{cells}")


if __name__ == "__main__":
    main(*[int(sys.argv[1])] if len(sys.argv) > 1 else [])
