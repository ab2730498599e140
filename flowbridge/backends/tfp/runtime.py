"""Drive a generated TFP flow from flowbridge: devices, fresh tensors, autodiff Jacobians.

Every call makes new tensors, so TFP's identity-keyed caches never answer for the math.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from ..common import set_training


def prepare() -> None:
    """TensorFlow imported quietly, before anything else imports it."""
    quiet_tensorflow()


def layers_of(flow) -> list:
    """The layers of a flow in application order (a Chain lists them reversed), without
    an image flow's layout transposes."""
    import tensorflow_probability as tfp

    bijectors = getattr(flow, "bijectors", None)
    if bijectors is None:
        return [flow]
    return [b for b in reversed(bijectors) if not isinstance(b, tfp.bijectors.Transpose)]


def quiet_tensorflow() -> None:
    """Load TensorFlow without its start-up lines on the terminal.

    ``TF_CPP_MIN_LOG_LEVEL`` (set to 3 unless the user chose a level) quiets TF's own
    logging, but some lines (``oneDNN custom operations are on``, ``cudart_stub``) are
    written by absl before that setting is read. So the first import and device query run
    with the process's stderr file descriptor pointed at /dev/null; Python exceptions
    still propagate. A user who sets ``TF_CPP_MIN_LOG_LEVEL=0`` sees everything.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        import tensorflow as tf
        import tensorflow_probability  # noqa: F401

        tf.config.list_physical_devices("GPU")
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def devices() -> list[str]:
    import tensorflow as tf

    return ["cpu"] + (["cuda"] if tf.config.list_physical_devices("GPU") else [])


def unavailable_devices() -> dict[str, str]:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return {}
    return {"cuda": "tensorflow sees no GPU"}


def precise() -> None:
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)


def _device(device: str):
    import tensorflow as tf

    return tf.device("/GPU:0" if device == "cuda" else "/CPU:0")


def make(module, params, dtype="float32", data_format="channels_last", validate_args=False):
    """The flow of the loaded generated ``module`` as a TFP Chain in ``dtype`` with
    checked neutral ``params`` (None: the module's own initial weights); an image flow
    takes data in ``data_format``. ``validate_args``: TFP's, inputs checked against the
    layers' domains."""
    import tensorflow as tf

    layout = {"data_format": data_format} if len(module.EVENT_SHAPE) == 3 else {}
    flow = module.build_flow(params, dtype=tf.as_dtype(dtype), validate_args=validate_args,
                             **layout)  # fmt: skip
    flow._flowbridge_options = {"dtype": tf.as_dtype(dtype).name, "data_format": data_format,
                                "validate_args": validate_args}  # fmt: skip
    return flow


def saved(module, flow) -> dict:
    """What a pickled flow keeps beside its spec: its weights and batch-norm state as
    NumPy arrays, the options it was built with and each layer's training mode."""
    params = {k: np.array(v.numpy()) for k, v in module.neutral_params(flow).items()}
    training = [getattr(layer, "training", None) for layer in layers_of(flow)]
    return {"params": params, "options": dict(flow._flowbridge_options), "training": training}


def restored(module, params, state: dict):
    """The flow of a pickled ``state`` with its checked ``params``
    (:func:`flowbridge.persist.rebuild`)."""
    flow = make(module, params, **state["options"])
    for layer, training in zip(layers_of(flow), state["training"], strict=True):
        if training is not None:
            layer.training = training
    return flow


def build(module, params, dtype: str, device: str):
    precise()
    with _device(device):
        flow = make(module, params, dtype)
    set_training(layers_of(flow), False)  # evaluation: a batch norm's running averages
    flow._flowbridge_device = device
    flow._flowbridge_dtype = dtype
    flow._flowbridge_event_ndims = len(module.EVENT_SHAPE)
    flow._flowbridge_image = len(module.EVENT_SHAPE) == 3  # built channels last: transpose
    return flow


def training(flow):
    """``flow`` with its batch norms in training mode (batch statistics)."""
    set_training(layers_of(flow), True)
    return flow


def _run(flow):
    return _device(getattr(flow, "_flowbridge_device", "cpu"))


def _tensor(flow, a: np.ndarray, event: bool = True):
    """A fresh tensor of ``a``; an image event (n, C, H, W) in the flow's channels-last
    layout."""
    import tensorflow as tf

    a = np.array(a)
    if event and getattr(flow, "_flowbridge_image", False):
        a = np.moveaxis(a, -3, -1)
    return tf.constant(a, dtype=getattr(flow, "_flowbridge_dtype", "float32"))


def _numpy(t, batch: tuple) -> np.ndarray:
    return np.broadcast_to(np.asarray(t, dtype=np.float64), batch).copy()


def _batch(flow, a: np.ndarray) -> tuple:
    return a.shape[: a.ndim - flow._flowbridge_event_ndims]


def _events(flow, t) -> np.ndarray:
    """The flow's output events as float64, channels first (the neutral layout)."""
    a = np.asarray(t, dtype=np.float64)
    return np.moveaxis(a, -1, -3).copy() if getattr(flow, "_flowbridge_image", False) else a


def _given(flow, context) -> dict:
    """``conditional_input=`` a fresh tensor, for a conditional flow."""
    return {} if context is None else {"conditional_input": _tensor(flow, context, event=False)}


def forward(flow, x: np.ndarray, context: np.ndarray | None = None):
    with _run(flow):
        xt, given = _tensor(flow, x), _given(flow, context)
        y = flow.forward(xt, **given)
        ld = flow.forward_log_det_jacobian(xt, event_ndims=flow._flowbridge_event_ndims, **given)
        return _events(flow, y), _numpy(ld, _batch(flow, x))


def inverse(flow, y: np.ndarray, context: np.ndarray | None = None):
    with _run(flow):
        yt, given = _tensor(flow, y), _given(flow, context)
        x = flow.inverse(yt, **given)
        ld = flow.inverse_log_det_jacobian(yt, event_ndims=flow._flowbridge_event_ndims, **given)
        return _events(flow, x), _numpy(ld, _batch(flow, y))


def round_trip(flow, x: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    import tensorflow as tf

    with _run(flow):
        given = _given(flow, context)
        y = tf.identity(flow.forward(_tensor(flow, x), **given))  # a new tensor: no cache hit
        return _events(flow, flow.inverse(y, **given))


def jacobian_log_det(flow, x: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    import tensorflow as tf

    with _run(flow):
        xt, given = _tensor(flow, x), _given(flow, context)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = flow.forward(xt, **given)
        jac = tape.batch_jacobian(y, xt).numpy().astype(np.float64)
    n = len(x)  # (n, *out, *in) -> (n, D, D); log|det| does not see the layout's permutation
    return np.linalg.slogdet(jac.reshape(n, jac[0].size // x[0].size, x[0].size))[1]
