"""BatchNorm with PyTorch's numerics, a drop-in for flax's `nn.BatchNorm`.

Two differences from `nn.BatchNorm`, both as PyTorch (and so the reference
ConvNet-AIG code) computes:

- The batch variance takes two passes, the mean first and then the mean of the
  squared deviations. Flax's one pass (E[x^2] - E[x]^2) cancels
  catastrophically when a feature's spread is small next to its mean, which is
  the usual case for the gates' 16 hidden units (the gate path then loses
  float32 precision that PyTorch keeps; figures in the README).
- The running variance is updated with the unbiased batch variance
  (x n/(n-1), n = elements per channel over the whole batch); normalisation
  itself uses the biased one.

The variables are those of `nn.BatchNorm` (params `scale`, `bias`; batch_stats
`mean`, `var`, float32, shape (features,)), so checkpoints of either load into
the other. Statistics are float32 whatever the compute dtype. The module knows
no axis names: under `jax.jit` with a batch sharded over a mesh its means are
already over the global batch, and so is n.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


class BatchNorm(nn.Module):
  """Batch normalisation over every axis but the last.

  Attributes:
    use_running_average: normalise with the running statistics (evaluation)
      instead of the batch's (training, which also updates them).
    momentum: decay of the running averages (PyTorch's momentum 0.1 is 0.9).
    epsilon: added to the variance.
    dtype: dtype of the output (default: the input's, at least float32).
    scale_init: init of the scale (gamma); ones, or U(0, 1) as PyTorch < 1.2.
  """

  use_running_average: bool | None = None
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = None
  scale_init: Callable = nn.initializers.ones

  @nn.compact
  def __call__(
      self, x: jax.Array, use_running_average: bool | None = None
  ) -> jax.Array:
    """Normalises `x` (..., features); returns an array of x's shape."""
    use_running_average = nn.merge_param(
        'use_running_average', self.use_running_average, use_running_average
    )
    features = x.shape[-1]
    axes = tuple(range(x.ndim - 1))
    ra_mean = self.variable(
        'batch_stats', 'mean', jnp.zeros, (features,), jnp.float32
    )
    ra_var = self.variable(
        'batch_stats', 'var', jnp.ones, (features,), jnp.float32
    )
    x32 = x.astype(jnp.float32)
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      mean = jnp.mean(x32, axis=axes)
      var = jnp.mean(jnp.square(x32 - mean), axis=axes)
      if not self.is_initializing():
        n = x.size // features
        unbiased = var * (n / (n - 1)) if n > 1 else var
        ra_mean.value = (
            self.momentum * ra_mean.value + (1 - self.momentum) * mean
        )
        ra_var.value = (
            self.momentum * ra_var.value + (1 - self.momentum) * unbiased
        )
    scale = self.param('scale', self.scale_init, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    y = (x32 - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
    return y.astype(self.dtype or jnp.promote_types(x.dtype, jnp.float32))


def gamma_inits(bn_gamma_init: str, family: str) -> tuple[Callable, Callable]:
  """(backbone BN, gate BN) scale initialisers for `model.bn_gamma_init`.

  'ones' gives ones everywhere. 'reference' gives U(0, 1), PyTorch < 1.2's
  default that the reference (PyTorch 0.3.1) kept, where the reference has it:
  every BatchNorm of the CIFAR model (stem, blocks, shortcuts, gates), only the
  gates' BatchNorm of the ImageNet model (it fills its BatchNorm2d gammas with
  1). The wide family has no reference model: its backbone follows the Wide
  ResNet code (gammas 1) and its gates the ConvNet-AIG gate, so only the
  gates' BatchNorm gets U(0, 1).

  Args:
    bn_gamma_init: 'ones' or 'reference'.
    family: `model.name` (cifar_resnet, wide_resnet, imagenet_resnet).
  """
  ones, uniform = nn.initializers.ones, nn.initializers.uniform(scale=1.0)
  if bn_gamma_init == 'ones':
    return ones, ones
  return (uniform if family == 'cifar_resnet' else ones), uniform
