"""Tests of `adanet_jax.steps`: the train step's metric sums and the eval
step's masked sums, in every gate mode."""

import jax
import jax.numpy as jnp
import numpy as np

from adanet_jax import models, optim, steps
from conftest import tiny_config


def _state(config):
  tx, _ = optim.create_optimizer(config, steps_per_epoch=44)
  return steps.create_train_state(config, models.create_model(config), tx, jax.random.key(0))


def _batch(n=6, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
          'label': rng.integers(0, 10, n).astype(np.int32)}


def test_eval_step_counts_only_real_examples_and_branches_run():
  config = tiny_config()
  state = _state(config)
  batch = {**_batch(), 'mask': np.array([1, 1, 1, 1, 0, 0], np.float32)}
  for mode in ('deterministic', 'expected'):
    out = jax.jit(lambda s, b, mode=mode: steps.eval_step(
        s, b, gate_mode=mode, num_classes=10))(state, batch)
    assert float(out['count']) == 4.0
    assert float(out['class_count'].sum()) == 4.0
    if mode == 'expected':   # every branch computed; gate values are probabilities
      np.testing.assert_array_equal(out['executed'], [4.0, 4.0, 4.0])
      assert np.all((out['gates'] > 0) & (out['gates'] < 4))
    else:
      np.testing.assert_array_equal(out['executed'], out['gates'])


def test_train_step_sums_and_step_key():
  config = tiny_config()
  state = _state(config)
  step = jax.jit(steps.make_train_step(config, optim.create_schedule(config, 44)))
  new, out = step(state, _batch(), jax.random.key(1))
  assert int(new.step) == 1 and float(out['count']) == 6.0
  assert float(out['first_nonfinite_step']) == np.inf
  np.testing.assert_allclose(float(out['loss']),
                             float(out['ce'] + config.loss.weight * out['target_loss']), rtol=1e-6)
  # The noise of one stream at one step is a function of (seed, step) alone.
  key = jax.random.key(1)
  assert jnp.array_equal(jax.random.key_data(steps.step_key(key, 3, 0)),
                         jax.random.key_data(jax.random.fold_in(jax.random.fold_in(key, 3), 0)))
