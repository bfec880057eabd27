"""Tests of `adanet_jax.metrics`: sums on the device, means on the host."""

import jax.numpy as jnp
import numpy as np
import pytest

from adanet_jax import metrics


def test_accumulate_sums_and_keeps_the_first_nonfinite_step():
  a = {'count': jnp.float32(2), 'loss': jnp.float32(3.0), 'first_nonfinite_step': jnp.inf}
  b = {'count': jnp.float32(2), 'loss': jnp.float32(5.0), 'first_nonfinite_step': jnp.float32(7)}
  c = {'count': jnp.float32(2), 'loss': jnp.float32(1.0), 'first_nonfinite_step': jnp.float32(9)}
  total = metrics.accumulate(metrics.accumulate(metrics.accumulate(None, a), b), c)
  assert (float(total['count']), float(total['loss'])) == (6.0, 9.0)
  assert float(total['first_nonfinite_step']) == 7.0


def test_summarize_train_means_over_images():
  sums = {'count': 4.0, 'loss': 6.0, 'ce': 4.0, 'target_loss': 2.0, 'correct': 3.0,
          'gates': np.array([4.0, 2.0]), 'learning_rate': 0.4}
  s = metrics.summarize_train(sums)
  assert (s['loss'], s['ce'], s['target_loss'], s['accuracy']) == (1.5, 1.0, 0.5, 0.75)
  assert s['gate_rates'] == [1.0, 0.5] and s['gate_rate'] == 0.75
  assert s['learning_rate'] == pytest.approx(0.1)
