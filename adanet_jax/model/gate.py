"""The ConvNet-AIG gate: one per residual block, it decides per image whether
the block runs.

global average pool -> Dense(hidden) -> BatchNorm -> ReLU -> Dense(2); logit 1
means "execute", logit 0 "skip". The decision is hard (0/1) in the forward pass
and differentiable through the straight-through Gumbel-softmax estimator.
The gate is a pure function of its input and, in mode `sample`, of the key
its Gumbel noise is drawn from (`gumbel_noise`).
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from adanet_jax.errors import ConfigError
from adanet_jax.model import norm

GATE_MODES = ('sample', 'deterministic', 'expected')

# Last Dense of the gate as in the reference: tiny kernel, bias (0.1, 2.0), so
# a fresh gate executes with probability sigmoid(1.9) = 0.8699.
_LAST_KERNEL_STD = 1e-3
_LAST_BIAS = (0.1, 2.0)


def check_gate_mode(mode: str) -> str:
  """Returns `mode` or raises a ValueError naming the allowed modes."""
  if mode not in GATE_MODES:
    raise ConfigError(
        f'gate mode {mode!r} is unknown; allowed: {", ".join(GATE_MODES)}'
    )
  return mode


def straight_through_gate(
    logits: jax.Array, noise: jax.Array | None, temperature: float
) -> jax.Array:
  """Hard 0/1 "execute" value with the Gumbel-softmax gradient.

  Args:
    logits: (..., 2) gate logits, index 1 = execute.
    noise: Gumbel noise of the same shape, or None for a noiseless decision.
    temperature: softmax temperature of the gradient path.

  Returns:
    (...,) array equal to 1[l1 + g1 > l0 + g0] in value, whose gradient is that
    of softmax((logits + noise) / temperature)[..., 1].
  """
  perturbed = logits if noise is None else logits + noise
  soft = jax.nn.softmax(perturbed / temperature, axis=-1)[..., 1]
  hard = (perturbed[..., 1] > perturbed[..., 0]).astype(soft.dtype)
  return soft + jax.lax.stop_gradient(hard - soft)


class Gate(nn.Module):
  """Per-image execution gate of one residual block.

  Attributes:
    hidden: width of the hidden layer (16 in every model of the paper).
    hidden_kernel_init: init of the first Dense (PyTorch default on CIFAR,
      He fan-out normal on ImageNet, as the reference).
    temperature: Gumbel-softmax temperature (gradient path only); a call may
      pass another, also a traced array, so that a sweep over it compiles once.
    bn_scale_init: init of the hidden BatchNorm's gamma (`norm.gamma_inits`).
  """

  hidden: int = 16
  hidden_kernel_init: Callable = nn.initializers.variance_scaling(
      1 / 3, 'fan_in', 'uniform'
  )
  temperature: float = 1.0
  bn_scale_init: Callable = nn.initializers.ones

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      *,
      train: bool,
      mode: str,
      key: jax.Array | None = None,
      temperature: float | jax.Array | None = None,
  ):
    """Returns `(z, prob, logits)`: (batch,), (batch,), (batch, 2), float32.

    `z` is the value the residual branch is multiplied by: hard 0/1 in modes
    `sample` and `deterministic`, the execution probability in `expected`.
    `prob` = sigmoid(l1 - l0), the gate's execution probability; `logits` the
    gate's two logits (skip, execute), before any noise. `key` is the key of
    the Gumbel noise (`gumbel_noise`), needed in mode `sample` only.
    `temperature`, if given, replaces the attribute.
    """
    check_gate_mode(mode)
    if mode == 'sample' and key is None:
      raise ConfigError(
          "gate mode 'sample' needs a key: pass key= to the model's call"
      )
    fan_in = x.shape[-1]
    bias_init = torch_bias_init(fan_in)
    h = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    h = nn.Dense(
        self.hidden,
        kernel_init=self.hidden_kernel_init,
        bias_init=bias_init,
        name='fc1',
    )(h)
    h = norm.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        scale_init=self.bn_scale_init,
        name='fc1_bn',
    )(h)
    h = nn.relu(h)
    logits = nn.Dense(
        2,
        kernel_init=nn.initializers.normal(_LAST_KERNEL_STD),
        bias_init=lambda *_: jnp.asarray(_LAST_BIAS, jnp.float32),
        name='fc2',
    )(h)
    prob = jax.nn.sigmoid(logits[..., 1] - logits[..., 0])
    if mode == 'expected':
      return prob, prob, logits
    noise = gumbel_noise(key, logits.shape) if mode == 'sample' else None
    temperature = self.temperature if temperature is None else temperature
    return straight_through_gate(logits, noise, temperature), prob, logits


def gumbel_noise(key: jax.Array, shape) -> jax.Array:
  """The gate's Gumbel noise of `shape` (batch, 2) from `key`, float32.

  Public, so that the PyTorch twin feeds its gates the very same noise.
  """
  return jax.random.gumbel(key, shape, jnp.float32)


def torch_bias_init(fan_in: int):
  """PyTorch's default bias init for a layer with `fan_in` inputs."""
  bound = 1.0 / fan_in**0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, shape, dtype, -bound, bound
  )
