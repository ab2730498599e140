"""Data-parallel training of a flowbridge Pyro flow with DistributedDataParallel.

    python examples/distributed_pyro.py            # 2 processes, gloo, on this CPU
    python examples/distributed_pyro.py --fast     # fewer steps (CI)

Two processes (``torch.multiprocessing.spawn``, the ``gloo`` backend) each hold a replica
of the same flow (``fb.to_pyro``, the same initial parameters) and see their half of every
batch; ``DistributedDataParallel`` averages the gradients, so each Adam step is the step
of the mean loss over the whole batch. The script then trains the same flow in one process
on the whole batches and checks: after the last step the replicas' parameters are
identical, and equal to single-process training to float32 tolerance. The same code runs
on several GPUs or machines: launch it with ``torchrun --nproc_per_node=G`` (and
``--nnodes``), use the ``nccl`` backend and move the flow to ``cuda:{rank}``.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

import flowbridge as fb

SPEC = fb.realnvp(6, num_couplings=4, hidden=(32, 32), permutation="random",
                  scale={"kind": "clamp"}, name="distributed")  # fmt: skip
WORLD, BATCH, LR = 2, 64, 1e-3


def data(steps: int) -> np.ndarray:
    """The whole batches, (steps, BATCH, 6) float32: a correlated Gaussian mixture."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 6)) * 2.0
    pick = rng.integers(0, 3, (steps, BATCH))
    return (centres[pick] + 0.5 * rng.standard_normal((steps, BATCH, 6))).astype(np.float32)


def _loss_module(flow):
    """The mean negative log-likelihood as a module, so DDP's forward sees the model."""
    import pyro.distributions as dist
    import torch

    class NLL(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.flow = flow

        def forward(self, x):
            base = dist.Normal(torch.zeros(SPEC.dim), 1.0).to_event(1)
            return -dist.TransformedDistribution(base, [self.flow.inv]).log_prob(x).mean()

    return NLL()


def train(flow, batches, step_fn) -> None:
    import torch

    optimizer = torch.optim.Adam(flow.parameters(), lr=LR)
    for x in batches:
        optimizer.zero_grad()
        step_fn(torch.from_numpy(x)).backward()
        optimizer.step()


def replica(rank: int, steps: int, out: str, port: int) -> None:
    """One process of the data-parallel job: its half of every batch."""
    import torch
    import torch.distributed as tdist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    flow = fb.to_pyro(SPEC, fb.init_params(SPEC, seed=0))
    model = torch.nn.parallel.DistributedDataParallel(_loss_module(flow))
    half = BATCH // WORLD
    train(flow, [x[rank * half : (rank + 1) * half] for x in data(steps)], model)
    np.savez(Path(out) / f"rank{rank}.npz", **fb.params_from_pyro(flow))
    tdist.barrier()  # both ranks done before the group goes (gloo aborts a rank torn down early)
    tdist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a short run")
    args = parser.parse_args()
    import torch
    import torch.multiprocessing as mp

    t0 = time.time()
    steps = 20 if args.fast else 300
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(replica, args=(steps, out, port), nprocs=WORLD, join=True)
        ranks = [dict(np.load(Path(out) / f"rank{r}.npz")) for r in range(WORLD)]
    torch.set_num_threads(2)
    flow = fb.to_pyro(SPEC, fb.init_params(SPEC, seed=0))
    train(flow, list(data(steps)), _loss_module(flow))  # one process, whole batches
    single = fb.params_from_pyro(flow)
    start = fb.init_params(SPEC, seed=0)
    identical = all(np.array_equal(ranks[0][k], ranks[1][k]) for k in single)
    gap = max(float(np.max(np.abs(ranks[0][k] - single[k]))) for k in single)
    moved = max(float(np.max(np.abs(single[k] - start[k]))) for k in single)
    print(f"{WORLD} processes (gloo, CPU), {steps} Adam steps of {BATCH} ({BATCH // WORLD} "
          f"per process), {len(single)} parameter tensors")  # fmt: skip
    print(f"replicas identical after training: {identical}")
    print(f"max |replica - single-process| = {gap:.2e} (the weights moved up to {moved:.2e})")
    print(f"({'fast' if args.fast else 'full'} run, {time.time() - t0:.0f} s)")
    if not identical or gap > 1e-4:
        raise SystemExit("data-parallel training differs from single-process training")


if __name__ == "__main__":
    main()
