"""Pyro backend: ``TransformModule`` layers composed in a ``ComposeTransformModule``."""
