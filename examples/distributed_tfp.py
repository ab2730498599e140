"""Data-parallel training of a flowbridge TFP flow under tf.distribute.MirroredStrategy.

    python examples/distributed_tfp.py            # two logical CPU devices
    python examples/distributed_tfp.py --fast     # fewer steps (CI)

The one CPU is split into two logical devices; the flow (``fb.to_tfp``, the same initial
parameters) is built under ``MirroredStrategy.scope()``, so each weight is a mirrored
variable; each replica sees its half of every batch, its loss is its mean negative
log-likelihood divided by the number of replicas, and the optimizer sums the replicas'
gradients: each Adam step is the step of the mean loss over the whole batch. The script
then trains the same flow without a strategy on the whole batches and checks: after the
last step the replicas' variables are identical, and equal to single-device training to
float32 tolerance. The same code runs on several GPUs (``MirroredStrategy()`` picks them)
or machines (``MultiWorkerMirroredStrategy`` with ``TF_CONFIG``).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from distributed_pyro import BATCH, LR, WORLD, data  # noqa: E402  (the same task and data)

import flowbridge as fb  # noqa: E402

SPEC = fb.realnvp(6, num_couplings=4, hidden=(32, 32), permutation="random",
                  name="distributed")  # fmt: skip


def build(tf, tfp, tf_keras):
    """(flow, log_prob, optimizer), created in the current strategy's scope."""
    flow = fb.to_tfp(SPEC, fb.init_params(SPEC, seed=0))
    tfd = tfp.distributions
    q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(SPEC.dim)),
                                    tfp.bijectors.Invert(flow))  # fmt: skip
    return flow, q.log_prob, tf_keras.optimizers.Adam(LR, epsilon=1e-8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a short run")
    args = parser.parse_args()
    from flowbridge.backends.tfp.runtime import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    (cpu,) = tf.config.list_physical_devices("CPU")[:1]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * WORLD)  # before TF starts
    import tensorflow_probability as tfp
    import tf_keras

    t0 = time.time()
    steps = 20 if args.fast else 300
    batches = data(steps)
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(WORLD)])
    with strategy.scope():
        flow, log_prob, optimizer = build(tf, tfp, tf_keras)
    variables = flow.trainable_variables

    @tf.function
    def distributed_step(x):
        def replica_step(x):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(log_prob(x)) / strategy.num_replicas_in_sync
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables,
                                          strict=True))  # fmt: skip
            return loss

        return strategy.run(replica_step, args=(x,))

    half = BATCH // WORLD
    for x in batches:
        halves = strategy.experimental_distribute_values_from_function(
            lambda ctx, x=x: tf.constant(x[ctx.replica_id_in_sync_group * half :][:half]))
        distributed_step(halves)
    replicas = [[v.values[r].numpy() for v in variables] for r in range(WORLD)]

    single_flow, single_log_prob, single_opt = build(tf, tfp, tf_keras)  # no strategy

    @tf.function
    def single_step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(single_log_prob(x))
        grads = tape.gradient(loss, single_flow.trainable_variables)
        single_opt.apply_gradients(zip(grads, single_flow.trainable_variables, strict=True))
        return loss

    for x in batches:
        single_step(tf.constant(x))
    single = [v.numpy() for v in single_flow.trainable_variables]
    start = fb.init_params(SPEC, seed=0)
    identical = all(np.array_equal(a, b) for a, b in zip(*replicas, strict=True))
    gap = max(float(np.max(np.abs(a - b))) for a, b in zip(replicas[0], single, strict=True))
    moved = max(float(np.max(np.abs(v - start[k])))
                for k, v in fb.params_from_tfp(single_flow).items())  # fmt: skip
    print(f"MirroredStrategy over {WORLD} logical CPU devices, {steps} Adam steps of {BATCH} "
          f"({half} per replica), {len(variables)} variables")  # fmt: skip
    print(f"replicas identical after training: {identical}")
    print(f"max |replica - single-device| = {gap:.2e} (the weights moved up to {moved:.2e})")
    print(f"({'fast' if args.fast else 'full'} run, {time.time() - t0:.0f} s)")
    if not identical or gap > 1e-4:
        raise SystemExit("data-parallel training differs from single-device training")


if __name__ == "__main__":
    main()
