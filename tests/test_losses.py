"""Tests of the losses against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np

from adanet_jax.train import losses

# 4 images x 3 blocks of hard gate values; batch means (0.75, 0.25, 0.5).
GATES = jnp.array([[1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0]], jnp.float32)


def test_target_rate_loss_mean_and_sum():
  # (0.75-0.6)^2 + (0.25-0.6)^2 + (0.5-0.6)^2 = 0.0225 + 0.1225 + 0.01 = 0.155
  np.testing.assert_allclose(
      losses.target_rate_loss(GATES, (0.6,) * 3, 'sum'), 0.155, rtol=1e-6
  )
  np.testing.assert_allclose(
      losses.target_rate_loss(GATES, (0.6,) * 3, 'mean'), 0.155 / 3, rtol=1e-6
  )


def test_target_rate_loss_per_layer_targets_and_fixed_blocks():
  # Targets (0.5, 1, 0.3): block 1 has target 1 and leaves the sum, but the
  # mean still divides by all 3 blocks (the reference code).
  # (0.75-0.5)^2 + (0.5-0.3)^2 = 0.0625 + 0.04 = 0.1025
  targets = (0.5, 1.0, 0.3)
  np.testing.assert_allclose(
      losses.target_rate_loss(GATES, targets, 'sum'), 0.1025, rtol=1e-6
  )
  np.testing.assert_allclose(
      losses.target_rate_loss(GATES, targets, 'mean'), 0.1025 / 3, rtol=1e-6
  )


def test_target_rate_loss_gradient_flows_to_every_image():
  grad = jax.grad(lambda g: losses.target_rate_loss(g, (0.6,) * 3, 'sum'))(
      GATES
  )
  # d/dz_bl = 2 (zbar_l - t) / batch
  want = np.broadcast_to(2 * (np.array([0.75, 0.25, 0.5]) - 0.6) / 4, (4, 3))
  np.testing.assert_allclose(grad, want, rtol=1e-6)


def test_total_loss_adds_weighted_rate_to_cross_entropy():
  logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -1.0]])
  labels = jnp.array([0, 1, 1, 1])
  ce_hand = np.mean(
      [
          np.log(1 + np.exp(-2.0)),
          np.log(1 + np.exp(-1.0)),
          np.log(2.0),
          np.log(1 + np.exp(4.0)),
      ]
  )
  loss, parts = losses.total_loss(
      logits, labels, {'gates': GATES}, (0.6,) * 3, 2.0, 'mean'
  )
  np.testing.assert_allclose(parts['ce'], ce_hand, rtol=1e-6)
  np.testing.assert_allclose(loss, ce_hand + 2.0 * 0.155 / 3, rtol=1e-6)
