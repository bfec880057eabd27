"""`config_checks.check_values`: every field refuses a value that makes no
sense, in one message naming the field; the shipped configs pass."""

import glob
import os

import pytest

from adanet_jax import config_checks, config_io
from adanet_jax.config_base import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BAD = [
    ('optim.base_learning_rate', 0.0, 'optim.base_learning_rate=0.0 must be > 0'),
    ('optim.base_learning_rate', -0.1, 'optim.base_learning_rate=-0.1 must be > 0'),
    ('optim.base_learning_rate', float('nan'), 'optim.base_learning_rate=nan must be > 0'),
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
    ('train.batch_size', 0, 'train.batch_size=0 must be > 0'),
    ('eval.batch_size', -64, 'eval.batch_size=-64 must be > 0'),
    ('gates.temperature', 0.0, 'gates.temperature=0.0 must be > 0'),
    ('gates.eval_modes', (), 'gates.eval_modes=() must name at least one gate mode'),
    ('loss.weight', -2.0, 'loss.weight=-2.0 must be >= 0'),
    ('loss.target', 1.5, 'loss.target=1.5 is outside (0, 1]'),
    ('loss.target', 0.0, 'loss.target=0.0 is outside (0, 1]'),
    ('optim.schedule', 'linear', "optim.schedule='linear' is unknown"),
]


@pytest.mark.parametrize('field,value,message', BAD, ids=[f'{f}={v}' for f, v, _ in BAD])
def test_bad_value_is_refused_naming_the_field(load_config, field, value, message):
  config = load_config('digits.py')
  section, name = field.split('.')
  with config.unlocked():
    config[section][name] = value
  with pytest.raises(ConfigError) as e:
    config_checks.check_values(config)
  assert str(e.value).startswith(message)


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(REPO, 'configs', '*.py'))),
                         ids=os.path.basename)
def test_shipped_configs_pass(path):
  config_checks.check_values(config_io.load_config_file(path))
