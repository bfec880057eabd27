"""Learning-rate schedules and the epoch-to-step conversion."""

import numpy as np
import pytest

from adanet_jax.train import optim
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
    optim.validate(config)


def _drops(config, steps_per_epoch):
  """The steps at which the learning rate changes."""
  schedule = optim.create_schedule(config, steps_per_epoch)
  total = optim.epochs_to_steps(config.train.num_epochs, steps_per_epoch)
  rates = np.asarray([float(schedule(s)) for s in range(total)])
  return [int(s) for s in np.nonzero(np.diff(rates))[0] + 1]


def test_cifar10_drops_follow_an_epochs_override(load_config):
  # 195 steps of 256 per epoch (50,000 images). 350 epochs: drops at epochs
  # 150 and 250; 35 epochs: at the same fractions, 15/35 and 25/35.
  config = load_config('cifar10.py')
  assert optim.decay_steps(config, 195) == (29_250, 48_750)
  config.train.num_epochs = 35.0   # as --config.train.num_epochs=35 sets it
  assert optim.decay_steps(config, 195) == (2_925, 4_875)
  assert _drops(config, 195) == [2_925, 4_875]
  schedule = optim.create_schedule(config, 195)
  np.testing.assert_allclose([float(schedule(s)) for s in (2_924, 2_925, 4_874, 4_875)],
                             [0.1, 0.01, 0.01, 0.001], rtol=1e-6)


def test_imagenet_drops_every_30_percent(load_config):
  # 5,004 steps of 256 per epoch (1,281,167 images). 100 epochs: drops at 30,
  # 60, 90; 10 epochs: at epochs 3, 6, 9.
  config = load_config('imagenet.py')
  assert optim.decay_steps(config, 5_004) == (150_120, 300_240, 450_360)
  config.train.num_epochs = 10.0
  assert optim.decay_steps(config, 5_004) == (15_012, 30_024, 45_036)
  assert _drops(config, 100) == [300, 600, 900]
