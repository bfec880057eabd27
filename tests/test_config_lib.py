"""Tests of `adanet_jax.config_lib`: argument strings, overrides (names,
types, values), stored configs of older versions, and the value checks."""

import os
import types

from conftest import REPO, load_repo_config
import pytest

from adanet_jax import config_lib, main
from adanet_jax.errors import ConfigError
from adanet_jax.tools import sweep
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
            '--config.train.batch_sise names no field of the config; did you '
            'mean train.batch_size?',
        ),
        (
            {'optim.lambda': '1'},
            '--config.optim.lambda names no field of the config; the fields of '
            'optim: base_batch_size, base_learning_rate, decay_factor, '
            'decay_fractions, momentum, nesterov, schedule, warmup_epochs, '
            'weight_decay',
        ),
        (
            {'this.is.wrong': '2'},
            '--config.this.is.wrong names no field of the config; configs are '
            'locked: override only fields the config file defines',
        ),
        (
            {'trian.num_epochs': '2'},
            '--config.trian.num_epochs names no field of the config; did you '
            'mean train.num_epochs?',
        ),
        (
            {'optim.num_epochs': '2'},
            '--config.optim.num_epochs names no field of the config; did you '
            'mean train.num_epochs?',
        ),
        (
            {'batch_size': '2'},
            '--config.batch_size names no field of the config; did you mean '
            'eval.batch_size or train.batch_size?',
        ),
        (
            {'model.depth.x': '2'},
            '--config.model.depth.x names no field of the config; did you mean '
            'model.depth?',
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


def test_main_and_sweep_suggest_the_field_before_anything_is_created(
    tmp_path,
):
  args = types.SimpleNamespace(
      config=DIGITS,
      workdir=str(tmp_path / 'w'),
      overrides={'train.num_epoch': '5'},
      coordinator_address=None,
      num_processes=None,
      process_id=None,
      allow_config_change=False,
  )
  with pytest.raises(ConfigError) as e:
    main.main(args)
  assert str(e.value) == (
      '--config.train.num_epoch names no field of the config; did you mean '
      'train.num_epochs?'
  )
  # A common override, then a misspelt group in a sweep point.
  with pytest.raises(ConfigError) as e:
    sweep.load_points(DIGITS, 'smoke', {'gates.temprature': '2.0'})
  assert str(e.value) == (
      'sweep point target-0.3_seed-0: --config.gates.temprature names no '
      'field of the config; did you mean gates.temperature?'
  )
  (tmp_path / 'typo.py').write_text(
      'from adanet_jax import config_lib\n'
      f'get_config = config_lib.load_module({DIGITS!r}).get_config\n'
      'def get_sweeps():\n'
      '  return {"t": [{"loss.target": 0.5}, {"los.target": 0.3}]}\n'
  )
  with pytest.raises(ConfigError) as e:
    sweep.load_points(str(tmp_path / 'typo.py'), 't', {})
  assert str(e.value) == (
      'sweep point target-0.3: --config.los.target names no field of the '
      'config; did you mean loss.target or loss.targets?'
  )
  assert os.listdir(tmp_path) == ['typo.py']


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


def test_the_argument_string_starts_after_the_first_py_colon():
  split = config_lib.split_path_arg
  assert split('configs/x.py') == ('configs/x.py', None)
  assert split('configs/x.py:depth=8') == ('configs/x.py', 'depth=8')
  # paths in the argument keep their '/' and ':'
  assert split('configs/folder.py:dir=/data/a:b/photos,image_size=8') == (
      'configs/folder.py',
      'dir=/data/a:b/photos,image_size=8',
  )
