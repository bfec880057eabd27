"""ConvNet-AIG gated ResNets in JAX/Flax.

`adanet_jax.load(path)` loads a trained model (see `adanet_jax.infer.inference`).
It is imported on first use, so `import adanet_jax.<module>` stays light.
"""


def __getattr__(name):
  if name == 'load':
    from adanet_jax.infer.inference import load  # pylint: disable=import-outside-toplevel

    return load
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
