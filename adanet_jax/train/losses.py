"""Training losses: cross-entropy plus the ConvNet-AIG target-rate loss.

L = CE + weight * R(sum over blocks l with t_l < 1 of (zbar_l - t_l)^2), with
zbar_l the mean over the batch given of the straight-through gate value of
block l, and R dividing by the number of blocks (`mean`, the reference code;
blocks with target 1 stay in the divisor) or not (`sum`, the paper).
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the batch, computed in float32."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels
  ).mean()


def target_rate_loss(
    gates: jax.Array, targets: Sequence[float], reduction: str
) -> jax.Array:
  """The target-rate loss (without its weight).

  Args:
    gates: (batch, blocks) straight-through gate values of the whole batch.
    targets: one target execution rate per block; blocks with target 1 are
      left out of the sum.
    reduction: 'mean' divides the sum by the number of blocks, 'sum' does not.

  Returns:
    Scalar float32 loss.
  """
  targets = jnp.asarray(targets, jnp.float32)
  zbar = gates.astype(jnp.float32).mean(axis=0)
  squared = jnp.where(targets < 1.0, (zbar - targets) ** 2, 0.0)
  total = squared.sum()
  return total / targets.shape[0] if reduction == 'mean' else total


def total_loss(logits, labels, aux, targets, weight: float, reduction: str):
  """Returns (loss, parts) with parts {'ce', 'target_loss'} for metrics."""
  ce = cross_entropy(logits, labels)
  rate = target_rate_loss(aux['gates'], targets, reduction)
  return ce + weight * rate, {'ce': ce, 'target_loss': rate}
