"""Tests of `adanet_jax.config_lib`: argument strings, overrides (names,
types, values), stored configs of older versions, and the value checks."""

import os

from conftest import REPO, load_repo_config
import pytest

from adanet_jax import config_lib
from adanet_jax.errors import ConfigError
from adanet_jax.train import checks

DIGITS = os.path.join(REPO, 'configs', 'digits.py')


def test_bad_argument_strings():
  with pytest.raises(
      ConfigError, match=r"config argument 'dpeth' is unknown; allowed: depth"
  ):
    config_lib.parse_arg('dpeth=20', depth=110)
  with pytest.raises(
      ConfigError, match=r"config argument depth='x' must be of type int"
  ):
    config_lib.parse_arg('depth=x', depth=110)
  with pytest.raises(
      ConfigError, match=r'config argument gated=.maybe. must be true or false'
  ):
    config_lib.parse_arg('gated=maybe', gated=True)
  with pytest.raises(
      ConfigError, match=r"config argument '56' needs the form key=value"
  ):
    config_lib.parse_arg('56', depth=110)


def test_overrides_parse_as_the_command_line():
  config = config_lib.load_config(
      f'{DIGITS}:depth=8',
      {
          'train.num_epochs': '3',
          'model.gated': 'false',
          'gates.eval_modes': 'deterministic,expected',
          'optim.decay_fractions': '(0.5, 0.75)',
          'optim.schedule': "'step'",
          'data.data_dir': '/d',
          'seed': 4,
      },
  )
  assert config.train.num_epochs == 3.0 and isinstance(
      config.train.num_epochs, float
  )
  assert config.model.gated is False and config.model.depth == 8
  assert config.gates.eval_modes == ('deterministic', 'expected')
  assert config.optim.decay_fractions == (0.5, 0.75)
  assert (config.optim.schedule, config.data.data_dir, config.seed) == (
      'step',
      '/d',
      4,
  )


@pytest.mark.parametrize(
    'overrides,message',
    [
        (
            {'train.batch_sise': '4'},
            '--config.train.batch_sise names no field of the config',
        ),
        (
            {'optim.lambda': '1'},
            '--config.optim.lambda names no field of the config',
        ),
        (
            {'this.is.wrong': '2'},
            '--config.this.is.wrong names no field of the config',
        ),
        (
            {'train': '2'},
            '--config.train names a group of fields; override one of: batch_size',
        ),
        (
            {'train.batch_size': 'big'},
            '--config.train.batch_size=big: not a valid int',
        ),
        (
            {'train.batch_size': '2.5'},
            '--config.train.batch_size=2.5: not a valid int',
        ),
        (
            {'model.gated': 'maybe'},
            '--config.model.gated=maybe: must be true or false',
        ),
    ],
)
def test_bad_overrides_name_the_field(overrides, message):
  with pytest.raises(ConfigError) as e:
    config_lib.load_config(DIGITS, overrides)
  assert str(e.value).startswith(message), str(e.value)


BAD = [
    (
        'optim.base_learning_rate',
        0.0,
        'optim.base_learning_rate=0.0 must be > 0',
    ),
    (
        'optim.base_learning_rate',
        -0.1,
        'optim.base_learning_rate=-0.1 must be > 0',
    ),
    (
        'optim.base_learning_rate',
        float('nan'),
        'optim.base_learning_rate=nan must be > 0',
    ),
    ('train.num_epochs', 0.0, 'train.num_epochs=0.0 must be > 0'),
    ('optim.momentum', -0.5, 'optim.momentum=-0.5 must be in [0, 1)'),
    ('optim.momentum', 1.0, 'optim.momentum=1.0 must be in [0, 1)'),
    ('optim.weight_decay', -1e-4, 'optim.weight_decay=-0.0001 must be >= 0'),
    ('optim.decay_factor', 0.0, 'optim.decay_factor=0.0 must be in (0, 1]'),
    ('optim.decay_factor', 2.0, 'optim.decay_factor=2.0 must be in (0, 1]'),
    ('optim.warmup_epochs', -1.0, 'optim.warmup_epochs=-1.0 must be >= 0'),
    ('checkpoint.keep', 0, 'checkpoint.keep=0 must be >= 1'),
    ('checkpoint.every_steps', -1, 'checkpoint.every_steps=-1 must be >= 0'),
    ('train.log_every_steps', -5, 'train.log_every_steps=-5 must be >= 0'),
    ('train.sync_every_steps', 0, 'train.sync_every_steps=0 must be >= 1'),
    (
        'train.profile_steps',
        -1,
        'train.profile_steps=-1 must be an integer >= 0 (0: no profile)',
    ),
    ('train.batch_size', 0, 'train.batch_size=0 must be > 0'),
    ('eval.batch_size', -64, 'eval.batch_size=-64 must be > 0'),
    ('gates.temperature', 0.0, 'gates.temperature=0.0 must be > 0'),
    (
        'gates.eval_modes',
        (),
        'gates.eval_modes=() must name at least one gate mode',
    ),
    ('loss.weight', -2.0, 'loss.weight=-2.0 must be >= 0'),
    ('loss.target', 1.5, 'loss.target=1.5 is outside (0, 1]'),
    ('loss.target', 0.0, 'loss.target=0.0 is outside (0, 1]'),
    ('optim.schedule', 'linear', "optim.schedule='linear' is unknown"),
    (
        'optim.decay_fractions',
        (0.7, 0.3),
        'optim.decay_fractions=(0.7, 0.3) must be increasing',
    ),
    ('train.num_epochs', -1.0, 'train.num_epochs=-1.0 must be > 0'),
]


@pytest.mark.parametrize(
    'field,value,message', BAD, ids=[f'{f}={v}' for f, v, _ in BAD]
)
def test_values_that_cannot_train_are_refused(field, value, message):
  config = load_repo_config('digits.py')
  section, key = field.split('.')
  config[section][key] = value
  with pytest.raises(ConfigError) as e:
    checks.validate(config)
  assert str(e.value).startswith(message), str(e.value)


def test_a_stored_config_of_the_first_version_loads():
  config = config_lib.load_config(os.path.join(REPO, 'configs', 'cifar10.py'))
  stored = config.to_dict()
  stored['optim'].pop('decay_fractions')
  # absolute epochs, as version 1 wrote
  stored['optim']['decay_epochs'] = [
      150.0,
      250.0,
  ]
  stored['data'].pop('data_dir')  # absent from some version-1 configs
  upgraded = config_lib.from_dict(stored)
  assert upgraded.optim.decay_fractions == pytest.approx((150 / 350, 250 / 350))
  assert upgraded.data.data_dir == ''
  upgraded.optim.decay_fractions = config.optim.decay_fractions
  assert upgraded.to_dict() == config.to_dict()
  with pytest.raises(
      ConfigError, match='stored config has a field model.colour this version'
  ):
    config_lib.from_dict({'model': {'colour': 'red'}})
