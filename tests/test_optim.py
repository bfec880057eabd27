"""Learning-rate schedules and the epoch-to-step conversion."""

import numpy as np
import pytest

from adanet_jax import optim
from adanet_jax.errors import ConfigError


def test_epochs_to_steps():
  assert optim.epochs_to_steps(350, 196) == 68_600
  assert optim.epochs_to_steps(0.5, 11) == 6


def test_step_schedule_follows_batch_override(load_config):
  config = load_config('cifar10.py')
  config.train.batch_size = 128  # half the reference batch: half the learning rate
  schedule = optim.create_schedule(config, steps_per_epoch=10)
  assert optim.learning_rate(config) == pytest.approx(0.05)
  got = [float(schedule(s)) for s in (0, 1499, 1500, 2499, 2500, 3499)]
  np.testing.assert_allclose(got, [0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005], rtol=1e-6)


def test_cosine_with_warmup(load_config):
  config = load_config('digits.py', 'epochs=10')
  schedule = optim.create_schedule(config, steps_per_epoch=10)  # 10 warmup, 100 total
  np.testing.assert_allclose(float(schedule(5)), 0.05, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), 0.1, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(55)), 0.05, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(100)), 0.0, atol=1e-9)


def test_unknown_schedule(load_config):
  config = load_config('digits.py')
  config.optim.schedule = 'linear'
  with pytest.raises(ConfigError, match="optim.schedule='linear' is unknown; allowed: step, "
                                        'cosine, constant'):
    optim.create_schedule(config, 10)
