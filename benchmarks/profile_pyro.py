"""Profile flowbridge-Pyro against native Pyro at the target size (forward with log-det).

    python benchmarks/profile_pyro.py > benchmarks/profiles/pyro_forward.txt

Prints torch.profiler's top operators for each flow, 50 calls each, 2 threads.
"""

import torch
from torch.profiler import ProfilerActivity, profile

import flowbridge as fb
from flowbridge.bench import TARGET, flow_and_params, native_pyro

torch.set_num_threads(2)
spec, params = flow_and_params(dict(TARGET), "clamp")
dim = TARGET["dim"]
flows = {"native-pyro": native_pyro(spec, params, TARGET["hidden"]),
         "flowbridge-pyro": fb.to_pyro(spec, params)}
xs = [torch.randn(TARGET["batch"], dim) for _ in range(2)]
for name, flow in flows.items():
    with torch.no_grad():
        for k in range(10):
            y = flow(xs[k % 2])
            flow.log_abs_det_jacobian(xs[k % 2], y)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for k in range(50):
                y = flow(xs[k % 2])
                flow.log_abs_det_jacobian(xs[k % 2], y)
    print(f"==== {name}: forward with log-det, 50 calls")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
