"""Port native flows across frameworks: a Pyro AffineCoupling stack into TFP, and a TFP
RealNVP chain into Pyro, and print how closely the ports agree with the originals.

    python examples/port_native.py            # (--fast is accepted; the run is short)
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import torch  # noqa: E402
from pyro.distributions.torch_transform import ComposeTransformModule  # noqa: E402
from pyro.distributions.transforms import AffineCoupling, Permute  # noqa: E402
from pyro.nn import DenseNN  # noqa: E402

import flowbridge as fb  # noqa: E402

tfb = tfp.bijectors
D = 6


def native_pyro_flow():
    """What a Pyro user writes: AffineCoupling + DenseNN, Permute in between."""
    torch.manual_seed(0)
    parts = []
    for i in range(4):
        net = DenseNN(D // 2, [32, 32], [D - D // 2, D - D // 2], nonlinearity=torch.nn.Tanh())
        parts.append(AffineCoupling(D // 2, net))
        if i < 3:
            parts.append(Permute(torch.randperm(D)))
    return ComposeTransformModule(parts)


def native_tfp_flow():
    """What a TFP user writes: RealNVP with the default template, Permute, in a Chain."""
    tf.random.set_seed(0)
    layers, templates = [], []
    for i in range(4):
        template = tfb.real_nvp_default_template(hidden_layers=[32, 32])
        templates.append(template)
        layers.append(tfb.RealNVP(num_masked=D // 2, shift_and_log_scale_fn=template))
        if i < 3:
            layers.append(tfb.Permute(permutation=np.random.default_rng(i).permutation(D)))
    chain = tfb.Chain(list(reversed(layers)))
    chain.forward(tf.zeros([1, D]))  # the templates make their variables on the first call
    for template in templates:  # stand-in for training: biases too become non-zero
        for v in template.trainable_variables:  # (the Chain does not track these)
            v.assign_add(tf.random.normal(v.shape, stddev=0.05))
    return chain


def report(name: str, a_y, b_y, a_ld, b_ld) -> None:
    dy = np.abs(a_y - b_y).max() / np.abs(a_y).max()
    dld = np.max(np.abs(a_ld - b_ld) / (1 + np.abs(a_ld)))
    print(f"{name:<36} forward rel. error {dy:.1e}   log-det error {dld:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="accepted for symmetry; no effect")
    parser.parse_args()
    x = np.random.default_rng(1).standard_normal((1000, D)).astype(np.float32)

    pyro_native = native_pyro_flow()
    spec, params = fb.from_pyro_native(pyro_native)
    print(f"Pyro native -> spec {spec.hash[:12]}: {len(spec.layers)} layers, "
          f"{sum(v.size for v in params.values())} weights")  # fmt: skip
    xt = torch.tensor(x)
    with torch.no_grad():
        y = pyro_native(xt)
        ld = pyro_native.log_abs_det_jacobian(xt, y)
    in_tfp = fb.to_tfp(spec, params)
    report("Pyro AffineCoupling -> flowbridge TFP", y.numpy(), in_tfp.forward(x).numpy(),
           ld.numpy(), in_tfp.forward_log_det_jacobian(x, event_ndims=1).numpy())  # fmt: skip

    tfp_native = native_tfp_flow()
    spec, params = fb.from_tfp_native(tfp_native)
    print(f"TFP native -> spec {spec.hash[:12]}: {len(spec.layers)} layers, "
          f"{sum(v.size for v in params.values())} weights")  # fmt: skip
    in_pyro = fb.to_pyro(spec, params)
    with torch.no_grad():
        y = in_pyro(xt)
        ld = in_pyro.log_abs_det_jacobian(xt, y)
    native_ld = np.broadcast_to(tfp_native.forward_log_det_jacobian(x, event_ndims=1), (len(x),))
    report("TFP RealNVP -> flowbridge Pyro", tfp_native.forward(x).numpy(), y.numpy(),
           native_ld, ld.numpy())  # fmt: skip
    print("(float32 in every framework: agreement is to float32 rounding)")


if __name__ == "__main__":
    main()
