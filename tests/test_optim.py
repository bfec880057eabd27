"""Learning-rate schedules (optax's, composed) and the optimizer against
hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adanet_jax.errors import ConfigError
from adanet_jax.train import optim
from adanet_jax.train import plan as plan_lib


def _spec(config, steps_per_epoch):
  return plan_lib.make_plan(config, steps_per_epoch).optimizer


def _schedule(config, steps_per_epoch):
  return optim.create_schedule(_spec(config, steps_per_epoch))


def test_step_schedule_follows_batch_override(load_config):
  config = load_config('cifar10.py')
  config.train.batch_size = (
      128  # half the reference batch: half the learning rate
  )
  schedule = _schedule(config, steps_per_epoch=10)
  assert optim.learning_rate(config) == pytest.approx(0.05)
  got = [float(schedule(s)) for s in (0, 1499, 1500, 2499, 2500, 3499)]
  np.testing.assert_allclose(
      got, [0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005], rtol=1e-6
  )


def test_cosine_with_warmup(load_config):
  config = load_config('digits.py', 'epochs=10')
  schedule = _schedule(config, steps_per_epoch=10)  # 10 warmup, 100 total
  np.testing.assert_allclose(float(schedule(0)), 0.0, atol=0)
  np.testing.assert_allclose(float(schedule(5)), 0.05, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), 0.1, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(55)), 0.05, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(100)), 0.0, atol=1e-9)
  # stays at 0 after the end
  np.testing.assert_allclose(float(schedule(150)), 0.0, atol=1e-9)


def test_step_schedule_with_warmup_counts_drops_from_step_0(load_config):
  config = load_config('cifar10.py', 'epochs=10')
  config.optim.warmup_epochs, config.optim.decay_fractions = 1.0, (0.5, 0.8)
  # warmup 10 steps; drops at 50 and 80
  schedule = _schedule(config, steps_per_epoch=10)
  got = [float(schedule(s)) for s in (0, 4, 10, 49, 50, 79, 80, 200)]
  np.testing.assert_allclose(
      got, [0.0, 0.04, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6
  )


def test_two_drops_on_one_step_multiply_twice(load_config):
  config = load_config('cifar10.py', 'epochs=1')
  # of 10 steps: both round to step 4
  config.optim.decay_fractions = (
      0.41,
      0.44,
  )
  spec = _spec(config, steps_per_epoch=10)
  assert spec.decay_steps == (4, 4)
  schedule = optim.create_schedule(spec)
  np.testing.assert_allclose(
      [float(schedule(s)) for s in (3, 4)], [0.1, 0.001], rtol=1e-6
  )


def test_constant_schedule(load_config):
  config = load_config('digits.py', 'epochs=10')
  config.optim.schedule, config.optim.warmup_epochs = 'constant', 0.5
  schedule = _schedule(config, steps_per_epoch=10)  # 5 warmup steps
  np.testing.assert_allclose(
      [float(schedule(s)) for s in (0, 1, 5, 99, 1000)],
      [0.0, 0.02, 0.1, 0.1, 0.1],
      rtol=1e-6,
  )


def test_unknown_schedule(load_config):
  config = load_config('digits.py')
  config.optim.schedule = 'linear'
  with pytest.raises(
      ConfigError,
      match="optim.schedule='linear' is unknown; allowed: step, "
      'cosine, constant',
  ):
    optim.validate(config)


def _drops(config, steps_per_epoch):
  """The steps at which the learning rate changes."""
  spec = _spec(config, steps_per_epoch)
  schedule = optim.create_schedule(spec)
  rates = np.asarray([float(schedule(s)) for s in range(spec.total_steps)])
  return [int(s) for s in np.nonzero(np.diff(rates))[0] + 1]


def test_cifar10_drops_follow_an_epochs_override(load_config):
  # 195 steps of 256 per epoch (50,000 images). 350 epochs: drops at epochs
  # 150 and 250; 35 epochs: at the same fractions, 15/35 and 25/35.
  config = load_config('cifar10.py')
  assert _spec(config, 195).decay_steps == (29_250, 48_750)
  config.train.num_epochs = 35.0  # as --config.train.num_epochs=35 sets it
  assert _spec(config, 195).decay_steps == (2_925, 4_875)
  assert _drops(config, 195) == [2_925, 4_875]
  schedule = _schedule(config, 195)
  np.testing.assert_allclose(
      [float(schedule(s)) for s in (2_924, 2_925, 4_874, 4_875)],
      [0.1, 0.01, 0.01, 0.001],
      rtol=1e-6,
  )


def test_imagenet_drops_every_30_percent(load_config):
  # 5,004 steps of 256 per epoch (1,281,167 images). 100 epochs: drops at 30,
  # 60, 90; 10 epochs: at epochs 3, 6, 9.
  config = load_config('imagenet.py')
  assert _spec(config, 5_004).decay_steps == (150_120, 300_240, 450_360)
  config.train.num_epochs = 10.0
  assert _spec(config, 5_004).decay_steps == (15_012, 30_024, 45_036)
  assert _drops(config, 100) == [300, 600, 900]


def test_coupled_weight_decay_is_added_before_momentum(load_config):
  config = load_config('cifar10.py', 'depth=20')
  config.optim.schedule = 'constant'
  config.optim.weight_decay = 0.01
  config.train.batch_size = 256  # lr = 0.1
  tx, _ = optim.create_optimizer(_spec(config, steps_per_epoch=10))
  p = {'w': jnp.array([1.0, -2.0])}
  g = {'w': jnp.array([0.5, 0.25])}
  state = tx.init(p)
  upd, state = tx.update(g, state, p)
  p1 = optax.apply_updates(p, upd)
  # PyTorch SGD: d = g + wd p; buf = d; p -= lr buf
  d0 = np.array([0.5, 0.25]) + 0.01 * np.array([1.0, -2.0])
  np.testing.assert_allclose(
      p1['w'], np.array([1.0, -2.0]) - 0.1 * d0, rtol=1e-6
  )
  upd, state = tx.update(g, state, p1)
  p2 = optax.apply_updates(p1, upd)
  buf = 0.9 * d0 + (np.array([0.5, 0.25]) + 0.01 * np.asarray(p1['w']))
  np.testing.assert_allclose(
      p2['w'], np.asarray(p1['w']) - 0.1 * buf, rtol=1e-6
  )


def test_nesterov_and_warmup_update_by_hand(load_config):
  config = load_config('cifar10.py', 'depth=20,epochs=10')
  config.optim.schedule, config.optim.nesterov = 'constant', True
  # 2 warmup steps
  config.optim.warmup_epochs, config.optim.weight_decay = (
      0.2,
      0.0,
  )
  tx, schedule = optim.create_optimizer(_spec(config, steps_per_epoch=10))
  p, g = {'w': jnp.array([1.0])}, {'w': jnp.array([0.5])}
  state = tx.init(p)
  # warmup 0, 0.05, then 0.1
  for lr, buf in (
      (0.0, 0.5),
      (0.05, 0.95),
      (0.1, 1.355),
  ):
    upd, state = tx.update(g, state, p)
    # Nesterov (PyTorch): buf = mu buf + g; step = g + mu buf.
    np.testing.assert_allclose(upd['w'], [-lr * (0.5 + 0.9 * buf)], rtol=1e-6)
  assert float(schedule(1)) == pytest.approx(0.05)


def test_optimizer_state_keeps_the_layout_of_checkpoints(load_config):
  # chain(add_decayed_weights, sgd(schedule, momentum)): the tree checkpoints hold.
  p = {'w': jnp.zeros(3)}
  for momentum in (0.9, 0.0):
    config = load_config('cifar10.py', 'depth=20')
    config.optim.momentum = momentum
    tx, _ = optim.create_optimizer(_spec(config, steps_per_epoch=10))
    want = optax.chain(
        optax.add_decayed_weights(1e-4),
        optax.sgd(optax.constant_schedule(0.1), momentum=momentum or None),
    )
    assert jax.tree.structure(tx.init(p)) == jax.tree.structure(want.init(p))
