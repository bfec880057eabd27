"""Every check of a config's values, run where a config enters (training,
sweeps, notebooks) before anything is created, compiled or written."""

import math

import jax
import ml_collections

from adanet_jax.errors import ConfigError
from adanet_jax.model import factory
from adanet_jax.train import checkpoints, optim, preemption

# (field, test, what is allowed): every value that can be wrong on its own.
# Written so that NaN fails every test.
RULES = (
    ('model.num_classes', lambda v: v > 0, 'must be >= 1'),
    ('gates.hidden', lambda v: v > 0, 'must be >= 1'),
    ('gates.temperature', lambda v: v > 0, 'must be > 0'),
    ('gates.eval_modes', len, 'must name at least one gate mode'),
    ('loss.weight', lambda v: v >= 0, 'must be >= 0'),
    ('data.image_size', lambda v: v > 0, 'must be >= 1'),
    ('data.channels', lambda v: v > 0, 'must be >= 1'),
    ('data.eval_fraction', lambda v: 0 < v < 1, 'must be in (0, 1)'),
    ('optim.base_learning_rate', lambda v: v > 0, 'must be > 0'),
    ('optim.base_batch_size', lambda v: v > 0, 'must be > 0'),
    ('optim.momentum', lambda v: 0 <= v < 1, 'must be in [0, 1)'),
    ('optim.weight_decay', lambda v: v >= 0, 'must be >= 0'),
    ('optim.decay_factor', lambda v: 0 < v <= 1, 'must be in (0, 1]'),
    # A warmup as long as the run or longer is allowed: the short test and
    # smoke runs (a fraction of an epoch) train in warmup only, on purpose.
    ('optim.warmup_epochs', lambda v: v >= 0, 'must be >= 0'),
    ('train.batch_size', lambda v: v > 0, 'must be > 0'),
    ('train.num_epochs', lambda v: v > 0, 'must be > 0'),
    (
        'train.log_every_steps',
        lambda v: v >= 0,
        'must be >= 0 (0: only after the last step)',
    ),
    (
        'train.eval_every_epochs',
        lambda v: v >= 0,
        'must be >= 0 (0: only after the last step)',
    ),
    ('train.sync_every_steps', lambda v: v > 0, 'must be >= 1'),
    (
        'train.profile_steps',
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        'must be an integer >= 0 (0: no profile)',
    ),
    ('eval.batch_size', lambda v: v > 0, 'must be > 0'),
    (
        'checkpoint.every_steps',
        lambda v: v >= 0,
        'must be >= 0 (0: only after the last step)',
    ),
    (
        'checkpoint.keep',
        lambda v: v > 0,
        'must be >= 1 (the checkpoints kept to resume from)',
    ),
)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Every check that needs only the config (not the machine or the data):
  the value of each field on its own (RULES), then the model's and the
  optimizer's own checks. `main`, every sweep point (its plan included) and
  `adanet_jax.load` run it before anything is created or compiled.

  Raises:
    ConfigError naming the first bad field and what is allowed.
  """
  for field, test, allowed in RULES:
    value = _get(config, field)
    try:
      ok = bool(test(value))
    except TypeError:
      ok = False
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
      raise ConfigError(f'{field}={value!r} {allowed}')
  preemption.check_stop_signals(config.train.stop_signals)
  factory.validate(config)
  optim.validate(config)
  return config


def _get(config, field: str):
  value = config
  for key in field.split('.'):
    value = value[key]
  return value


def check_plan(plan, config: ml_collections.ConfigDict) -> None:
  """Refuses a plan that trains no step (too few epochs for the dataset)."""
  if plan.num_steps < 1:
    raise ConfigError(
        f'train.num_epochs={config.train.num_epochs} trains 0 steps '
        f'({plan.steps_per_epoch} steps per epoch at train.batch_size='
        f'{config.train.batch_size}): must give at least 1 step'
    )


def check_run_config(config: ml_collections.ConfigDict) -> None:
  """Checks the config (`validate`) and what depends on the
  machine, before anything is created or compiled."""
  validate(config)
  if config.init_from:  # refused before the workdir is created
    checkpoints.check_init_from(config.init_from)
  n = jax.device_count()
  for field, size in (
      ('train.batch_size', config.train.batch_size),
      ('eval.batch_size', config.eval.batch_size),
  ):
    if size <= 0 or size % n:
      raise ConfigError(
          f'{field}={size} must be a positive multiple of the device count '
          f'({n} devices)'
      )
  if (
      not 1 <= config.train.sync_every_steps <= 10
      and jax.default_backend() == 'cpu'
  ):
    raise ConfigError(
        f'train.sync_every_steps={config.train.sync_every_steps} must be '
        'in [1, 10] on CPU (more queued steps can deadlock XLA:CPU)'
    )
