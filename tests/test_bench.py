"""The benchmark's quick preset runs end to end (a smoke test: no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowbridge.bench import core, image, peers, runner, vector
from flowbridge.bench.report import markdown
from flowbridge.build import available
from flowbridge.cli import main

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
FLOWJAX = importlib.util.find_spec("flowjax") is not None


def test_presets():
    assert runner.configs("quick") == [vector.TARGET]
    axes = runner.configs("axes")
    assert len(axes) == 12 and axes[0] == vector.TARGET  # 1 + 4 + 2 + 2 + 3
    assert len(runner.configs("grid")) == 5 * 3 * 3 * 4
    with pytest.raises(ValueError, match="preset"):
        runner.configs("huge")


def test_flows_are_finite_and_not_the_identity():
    pytest.importorskip("torch")
    import numpy as np

    import flowbridge as fb

    spec, params = core.flow_and_params(dict(vector.TARGET, dim=16), "exp")
    x = np.random.default_rng(0).standard_normal((32, 16))
    y, ld = fb.to_numpy(spec, params).forward_with_log_det(x)
    assert np.isfinite(y).all() and np.isfinite(ld).all() and np.abs(y - x).max() > 0.1


@pytest.mark.long
def test_spline_benchmark_smoke(tmp_path):
    """benchmarks/splines.py runs (tiny timings) and checks its flows equal before timing."""
    pytest.importorskip("pyro")
    pytest.importorskip("jax")
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "splines.py"
    run = subprocess.run([sys.executable, str(script), "--repeats", "1", "--min-time", "0.01",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    table = (tmp_path / "splines.md").read_text()
    assert "| flowbridge-pyro |" in table and "| native-pyro |" in table
    assert "| flowbridge-jax |" in table


@pytest.mark.long
def test_numpyro_paths_benchmark_smoke(tmp_path):
    """benchmarks/numpyro_paths.py runs (a tiny flow) and checks every path equals the
    direct call before timing."""
    pytest.importorskip("numpyro")
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "numpyro_paths.py"
    run = subprocess.run([sys.executable, str(script), "--small", "--repeats", "1",
                          "--min-time", "0.01", "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    table = (tmp_path / "numpyro_paths.md").read_text()
    assert "| [t] | flowbridge |" in table and "| NeuTra | direct call |" in table


@pytest.mark.long
def test_jax_scan_benchmark_smoke(tmp_path):
    """benchmarks/jax_scan.py runs (a tiny flow): both forms equal before timing, the
    scanned one holding a scan and the unrolled one none."""
    pytest.importorskip("jax")
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "jax_scan.py"
    run = subprocess.run([sys.executable, str(script), "--small", "--processes", "1", "--repeats",
                          "1", "--min-time", "0.01", "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| 1 | " in (tmp_path / "jax_scan.md").read_text()


@pytest.mark.long
def test_floor_gap_benchmark_smoke(tmp_path):
    """benchmarks/floor_gap.py runs (a tiny flow): the hand-written flow checked equal to
    flowbridge's in both frameworks before timing, every form in the table."""
    pytest.importorskip("jax")
    pytest.importorskip("pyro")
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "floor_gap.py"
    run = subprocess.run([sys.executable, str(script), "--small", "--repeats", "1", "--min-time",
                          "0.01", "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    table = (tmp_path / "floor_gap.md").read_text()
    for form in ("floor", "chain", "affine", "affine + permutations", "flowbridge"):
        assert f"| {form} | " in table


@pytest.mark.long
def test_autoregressive_benchmark_smoke(tmp_path):
    """benchmarks/autoregressive.py runs (tiny timings, the smaller size) and checks each
    native against flowbridge with the same weights before timing."""
    for module in ("pyro", "tensorflow_probability", "numpyro"):
        pytest.importorskip(module)
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "autoregressive.py"
    run = subprocess.run([sys.executable, str(script), "--repeats", "1", "--min-time", "0.01",
                          "--sizes", "1", "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    table = (tmp_path / "autoregressive.md").read_text()
    for impl in ("flowbridge-pyro (IAF)", "native-pyro (IAF)", "flowbridge-tfp (MAF)",
                 "native-tfp (MAF)", "flowbridge-jax (IAF)", "native-numpyro (IAF)"):
        assert f"| {impl} |" in table, impl


@pytest.mark.long
@pytest.mark.skipif(not (available("pyro") and available("tfp")), reason="needs both frameworks")
def test_quick_preset_smoke(tmp_path):
    pytest.importorskip("matplotlib")
    res = CliRunner().invoke(main, ["bench", "--preset", "quick", "--repeats", "1", "--min-time",
                                    "0.01", "--out", str(tmp_path)])  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "quick.json").read_text())
    impls = {row["impl"] for run in data["runs"] for row in run["rows"]}
    installed = {name for name, version in peers.installed().items() if version}
    jax = set(vector.JAX_IMPLS) if available("jax") else set()
    assert impls == set(vector.TORCH_IMPLS) | set(vector.TF_IMPLS) | jax | installed
    assert all(row["seconds"] > 0 for run in data["runs"] for row in run["rows"])
    assert (tmp_path / "quick.md").read_text().startswith("# flowbridge benchmarks (quick)")
    assert (tmp_path / "quick.png").stat().st_size > 10_000
    if installed:
        assert (tmp_path / "quick_peers.png").stat().st_size > 10_000
        assert "## Peers (D=64" in (tmp_path / "quick.md").read_text()
    assert "| flowbridge-pyro / native-pyro forward | <= 0.9 |" in res.output


@pytest.mark.skipif(not (available("pyro") and available("tfp")), reason="needs both frameworks")
def test_conditional_workers_time_identical_conditional_flows():
    """Each worker asserts before timing that flowbridge's and the native conditional flow
    (Pyro's ConditionalAffineCoupling, TFP's RealNVP reading conditional_input) agree."""
    cfg = {**vector.CONDITIONAL, "dim": 8, "hidden": 16, "batch": 32, "couplings": 2}
    expected = {"torch": {"flowbridge-pyro", "native-pyro", "floor-torch"},
                "tf": {"flowbridge-tfp", "native-tfp", "floor-tf"}}  # fmt: skip
    for group, impls in expected.items():
        got = runner._run_worker(group, cfg, 1, 1, 0.001, False)
        assert {row["impl"] for row in got["rows"]} == impls
        assert all(row["seconds"] > 0 for row in got["rows"])
        # every floor times its training step too (forward, backward, Adam)
        floor = next(iter(i for i in impls if i.startswith("floor")))
        assert {row["op"] for row in got["rows"] if row["impl"] == floor} == {"forward", "train"}
    assert runner.configs("conditional") == [vector.CONDITIONAL]


@pytest.mark.skipif(not (available("pyro") and available("tfp")), reason="needs both frameworks")
def test_unconditional_workers_time_the_handwritten_flows_checked_equal():
    """At an unconditional size the torch and TF workers time the flow written by hand
    (checked equal to flowbridge's before timing) beside the floor: forward and train."""
    cfg = {**vector.TARGET, "dim": 8, "hidden": 16, "batch": 32, "couplings": 3}
    for group, hand in (("torch", "handwritten-torch"), ("tf", "handwritten-tf")):
        got = runner._run_worker(group, cfg, 1, 1, 0.001, False)
        assert {r["op"] for r in got["rows"] if r["impl"] == hand} == {"forward", "train"}
        assert hand in got["info"]["train_peak_bytes"]


@pytest.mark.skipif(not available("jax"), reason="needs jax")
@pytest.mark.parametrize("context", [0, 4])
def test_jax_worker_times_the_same_flow_jitted(context):
    """The jax worker checks flowbridge-JAX against the float64 reference before timing,
    and flowjax's flow against flowbridge-JAX's (where flowjax is installed),
    unconditional and conditional, and times every operation and its floor."""
    cfg = {**vector.TARGET, "dim": 8, "hidden": 16, "batch": 32, "couplings": 2, "context": context}
    got = runner._run_worker("jax", cfg, 1, 1, 0.001, False)
    peer = {("flowjax", op) for op in vector.OPS} if FLOWJAX else set()
    assert {(row["impl"], row["op"]) for row in got["rows"]} == {
        ("flowbridge-jax", op) for op in vector.OPS} | {("floor-jax", "forward"), ("floor-jax", "train")} | peer
    assert all(row["seconds"] > 0 for row in got["rows"]) and got["info"]["jax"]


@pytest.mark.skipif(not FLOWJAX, reason="needs flowjax")
@pytest.mark.parametrize("context", [0, 3])
def test_flowjax_check_catches_a_different_flow(context):
    """flowjax's coupling flow, loaded with the benchmark's weights, is flowbridge-JAX's
    flow; the check the worker runs before timing fails on a swapped permutation."""
    import jax.numpy as jnp
    import numpy as np

    import flowbridge as fb

    cfg = {**vector.TARGET, "dim": 6, "hidden": 8, "batch": 16, "couplings": 3, "context": context}
    spec, params = core.flow_and_params(cfg, "exp")
    flow = fb.to_jax(spec, params)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((16, 6)), jnp.float32)
    c = jnp.asarray(rng.standard_normal((16, context)), jnp.float32) if context else None
    vector.check_flowjax(vector.flowjax_flow(spec, params, cfg), flow, x, c)
    swapped = list(spec.layers[1].indices)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    layers = list(spec.layers)
    layers[1] = layers[1].model_copy(update={"indices": tuple(swapped)})
    with pytest.raises(AssertionError, match="flowjax differs from flowbridge-jax"):
        vector.check_flowjax(vector.flowjax_flow(spec.model_copy(update={"layers": layers}), params, cfg),
                             flow, x, c)  # fmt: skip


@pytest.mark.skipif(not (available("pyro") and available("tfp")), reason="needs both frameworks")
def test_image_workers_time_flows_equal_to_the_handwritten_ones(tmp_path):
    """The image preset: each worker asserts before timing that flowbridge's flow and the
    hand-written one (plain torch NCHW; plain TF channels last) give the same latents and
    log-densities; every implementation and operation is timed; the report names them."""
    assert runner.configs("image") == [image.IMAGE]
    cfg = {**image.IMAGE, "image": [2, 8, 8], "blocks": 1, "channels": 4, "batch": 4}
    runs = []
    for group, impls in (("torch", image.TORCH_IMPLS), ("tf", image.TF_IMPLS)):
        got = runner._run_worker(group, cfg, 1, 1, 0.001, False)
        assert {(r["impl"], r["op"]) for r in got["rows"]} == {
            (i, op) for i in impls for op in image.OPS}
        runs.append({"config": cfg, "group": group, **got})
    results = {"preset": "image", "machine": core.machine(), "threads": 1, "repeats": 1,
               "runs": runs}  # fmt: skip
    text = markdown(results)
    assert "| flowbridge-tfp-xla |" in text and "| handwritten-torch |" in text
    # and the peak memory of each training step, from each framework's own accounting
    assert "| handwritten-tf | " in text.split("train peak (MiB)")[1]


PEER_CFG = {**vector.TARGET, "dim": 8, "hidden": 16, "batch": 32, "couplings": 3}


@pytest.mark.skipif(not all(peers.installed().values()), reason="needs flowbridge[bench]")
def test_peer_worker_times_every_peer_on_the_same_flow():
    """The worker checks each peer's map, log-det and log_prob against flowbridge's before
    timing, for affine and additive couplings, and reports the differences it found."""
    got = runner._run_worker("torch-peers", PEER_CFG, 1, 1, 0.001, False)
    keys = {(r["impl"], r["peer"], r["kind"], r["op"]) for r in got["rows"]}
    want = {(impl, peer, kind, op) for peer in peers.PEERS for kind in peers.KINDS
            for impl in ("flowbridge-pyro", peer) for op in peers.OPS}  # fmt: skip
    assert keys == want
    assert all(r["seconds"] > 0 for r in got["rows"])
    diffs = got["info"]["max_difference"]
    assert set(diffs) == {f"{p}/{k}" for p in peers.PEERS for k in peers.KINDS}
    assert all(d < 1e-4 for d in diffs.values())
    results = {"runs": [{"group": "torch-peers", "config": PEER_CFG, **got}]}
    text = "\n".join(peers.markdown(results))
    assert text.count("| affine |") == 3 and text.count("| additive |") == 3


@pytest.mark.skipif(not all(peers.installed().values()), reason="needs flowbridge[bench]")
@pytest.mark.parametrize("peer", list(peers.PEERS))
@pytest.mark.parametrize("kind", peers.KINDS)
def test_peer_check_catches_a_different_flow(peer, kind):
    """The equality check can fail: the peer built from weights with one kernel entry
    changed, or with one permutation swapped, is refused."""
    import numpy as np
    import torch

    spec, params = core.flow_and_params(PEER_CFG, peers.scale_of(peer, kind))
    ours = peers.flowbridge_flow(spec, params, peer)
    x = torch.randn(16, spec.dim)
    build = peers.BUILDERS[peer]
    assert peers._check_equal(ours, build(spec, params, kind, 16), x) < 1e-4
    changed = dict(params)
    changed["layers.2.conditioner.0.kernel"] = params["layers.2.conditioner.0.kernel"] + np.float32(0.1)
    with pytest.raises(AssertionError, match="differs"):
        peers._check_equal(ours, build(spec, changed, kind, 16), x)
    swapped = list(spec.layers[1].indices)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    other = spec.model_copy(update={"layers": [spec.layers[0],
                                               spec.layers[1].model_copy(update={"indices": tuple(swapped)}),
                                               *spec.layers[2:]]})  # fmt: skip
    with pytest.raises(AssertionError, match="differs"):
        peers._check_equal(ours, build(other, params, kind, 16), x)


def test_report_writes_a_saved_runs_table_and_plot_again_without_timing(tmp_path):
    """``flowbridge bench --report FILE`` (how the committed image plot was made): the
    committed image run gives back its committed table, and now a plot too."""
    pytest.importorskip("matplotlib")
    saved = tmp_path / "image.json"
    saved.write_text((RESULTS / "image.json").read_text())
    res = CliRunner().invoke(main, ["bench", "--report", str(saved)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "image.md").read_text() == (RESULTS / "image.md").read_text()
    assert (tmp_path / "image.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved.write_text('{"preset": "image"}')
    res = CliRunner().invoke(main, ["bench", "--report", str(saved)])
    assert res.exit_code == 2 and "expected a flowbridge bench JSON file" in res.output


@pytest.mark.long
def test_fused_backward_benchmark_smoke(tmp_path):
    """benchmarks/fused_backward.py runs (a tiny flow): in each framework the fused op
    runs, and its values and gradients equal the generated flow's before timing."""
    for module in ("pyro", "tensorflow_probability"):
        pytest.importorskip(module)
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fused_backward.py"
    run = subprocess.run([sys.executable, str(script), "--small", "--repeats", "1", "--min-time",
                          "0.01", "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    table = (tmp_path / "fused_backward.md").read_text()
    assert "| torch " in table and "| tf " in table


@pytest.mark.long
def test_tfp_chain_benchmark_smoke(tmp_path):
    """benchmarks/tfp_chain.py runs (a tiny flow): both chains equal before timing."""
    pytest.importorskip("tensorflow_probability")
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "tfp_chain.py"
    run = subprocess.run([sys.executable, str(script), "--small", "--repeats", "1", "--min-time",
                          "0.01", "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| train (eager) |" in (tmp_path / "tfp_chain.md").read_text()
