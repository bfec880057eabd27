"""ConvNet-AIG gated ResNets in JAX/Flax.

`adanet_jax.load(path)` loads a trained model (see `adanet_jax.inference`).
It is imported on first use, so `import adanet_jax.<module>` stays light.
"""

from adanet_jax import console as _console

# Before anything loads TensorFlow or gRPC, which read it once (see console).
_console.quiet_native_logs()


def __getattr__(name):
  if name == 'load':
    from adanet_jax.inference import load  # pylint: disable=import-outside-toplevel
    return load
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
