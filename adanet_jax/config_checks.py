"""Value checks of a resolved config, before anything is created or compiled.

One function, `check_values`, used by training (`trainer.check_run_config`),
sweeps (every point, `--plan_only` included) and `inference.load`, so a value
that makes no sense (a learning rate of 0, a target of 1.5, keeping 0
checkpoints) is refused the same way everywhere, in one line naming the field.
"""

import math

import ml_collections

from adanet_jax import models, optim
from adanet_jax.config_base import ConfigError


def _positive(v) -> bool:
  return v > 0


def _non_negative(v) -> bool:
  return v >= 0


# (field, test, what is allowed). Written so that NaN fails every test.
RULES = (
    ('model.num_classes', _positive, 'must be >= 1'),
    ('gates.hidden', _positive, 'must be >= 1'),
    ('gates.temperature', _positive, 'must be > 0'),
    ('gates.eval_modes', len, 'must name at least one gate mode'),
    ('loss.weight', _non_negative, 'must be >= 0'),
    ('data.image_size', _positive, 'must be >= 1'),
    ('data.channels', _positive, 'must be >= 1'),
    ('optim.base_learning_rate', _positive, 'must be > 0'),
    ('optim.base_batch_size', _positive, 'must be > 0'),
    ('optim.momentum', lambda v: 0 <= v < 1, 'must be in [0, 1)'),
    ('optim.weight_decay', _non_negative, 'must be >= 0'),
    ('optim.decay_factor', lambda v: 0 < v <= 1, 'must be in (0, 1]'),
    ('optim.decay_epochs', lambda v: all(e >= 0 for e in v), 'must all be >= 0'),
    ('optim.warmup_epochs', _non_negative, 'must be >= 0'),
    ('train.batch_size', _positive, 'must be > 0'),
    ('train.num_epochs', _positive, 'must be > 0'),
    ('train.log_every_steps', _non_negative, 'must be >= 0 (0: only after the last step)'),
    ('train.eval_every_epochs', _non_negative, 'must be >= 0 (0: only after the last step)'),
    ('train.sync_every_steps', _positive, 'must be >= 1'),
    ('eval.batch_size', _positive, 'must be > 0'),
    ('checkpoint.every_steps', _non_negative, 'must be >= 0 (0: only after the last step)'),
    ('checkpoint.keep', _positive, 'must be >= 1 (the checkpoints kept to resume from)'),
)


def _get(config: ml_collections.ConfigDict, field: str):
  value = config
  for key in field.split('.'):
    value = value[key]
  return value


def check_values(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field whose value makes no sense.

  Args:
    config: a resolved config (`get_config` with overrides applied).
  """
  for field, test, allowed in RULES:
    try:
      value = _get(config, field)
    except (KeyError, AttributeError):  # a config.json written before the field existed
      continue
    try:
      ok = bool(test(value))
    except TypeError:
      ok = False
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
      raise ConfigError(f'{field}={value!r} {allowed}')
  # A warmup as long as the run or longer is allowed: the short test and
  # smoke runs (a fraction of an epoch) train in warmup only, on purpose.
  o = config.optim
  if o.schedule not in optim.SCHEDULES:
    raise ConfigError(f'optim.schedule={o.schedule!r} is unknown; allowed: '
                      f'{", ".join(optim.SCHEDULES)}')
  models.validate(config)  # model, gates and loss: depth, dtype, modes, targets in (0, 1]
