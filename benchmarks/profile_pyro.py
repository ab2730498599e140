"""Profile flowbridge-Pyro against native Pyro at the target size: forward with log-det,
and one training step (log_prob, backward, Adam), each flow on its own.

    python benchmarks/profile_pyro.py > benchmarks/profiles/pyro_forward.txt

Prints torch.profiler's top operators for each flow and task, 2 threads; the last
lines give the share of each train step's self CPU time that the matrix products
(``addmm``, ``mm``) and the Adam step take, the part no coupling code can remove.
"""

import itertools

import pyro.distributions as dist
import torch
from torch.profiler import ProfilerActivity, profile

import flowbridge as fb
from flowbridge.bench.core import flow_and_params
from flowbridge.bench.vector import TARGET, native_pyro

torch.set_num_threads(2)
spec, params = flow_and_params(dict(TARGET), "clamp")
dim = TARGET["dim"]
flows = {"native-pyro": native_pyro(spec, params, TARGET["hidden"]),
         "flowbridge-pyro": fb.to_pyro(spec, params)}  # fmt: skip
xs = [torch.randn(TARGET["batch"], dim) for _ in range(2)]
counter = itertools.count()
shares = {}
for name, flow in flows.items():
    d = dist.TransformedDistribution(dist.Normal(torch.zeros(dim), 1.0).to_event(1), [flow])
    opt = torch.optim.Adam(flow.parameters(), lr=1e-5)

    def forward(flow=flow):
        with torch.no_grad():
            x = xs[next(counter) % 2].clone()
            flow.log_abs_det_jacobian(x, flow(x))

    def train(d=d, opt=opt):
        opt.zero_grad(set_to_none=True)
        (-d.log_prob(xs[next(counter) % 2].clone()).mean()).backward()
        opt.step()

    for task, fn, calls in (("forward with log-det", forward, 50), ("train step", train, 30)):
        for _ in range(10):
            fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                fn()
        events = prof.key_averages()
        print(f"==== {name}: {task}, {calls} calls")
        print(events.table(sort_by="self_cpu_time_total", row_limit=14))
        if task == "train step":
            total = sum(e.self_cpu_time_total for e in events)
            gemm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::addmm", "aten::mm"))
            adam = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step"))
            shares[name] = (total / calls / 1e3, gemm / calls / 1e3, adam / calls / 1e3)
for name, (total, gemm, adam) in shares.items():
    print(f"{name}: train step {total:.2f} ms self CPU per step under the profiler; matrix "
          f"products {gemm:.2f} ms ({gemm / total:.0%}), Adam step {adam:.2f} ms "
          f"({adam / total:.0%}), the rest {total - gemm - adam:.2f} ms")
