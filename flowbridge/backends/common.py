"""Helpers the backends' runtimes share (no framework imported here)."""

from __future__ import annotations


def set_training(layers, training: bool) -> None:
    """Every layer with a training mode (a batch norm's ``training`` attribute, in the
    generated NumPy and TFP modules) switched to ``training`` or evaluation mode."""
    for layer in layers:
        if hasattr(layer, "training"):
            layer.training = training
