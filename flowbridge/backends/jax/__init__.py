"""The JAX backend: pure functions over a pytree of weights, for jax.jit, grad and vmap."""
