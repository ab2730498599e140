"""TFP backend: ``Bijector`` layers composed in a ``Chain``."""
