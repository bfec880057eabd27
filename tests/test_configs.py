"""The config files under configs/: every one loads, validates, takes an
override, is locked, and parses its argument string."""

import glob
import os

import pytest

from adanet_jax import config_lib
from adanet_jax.train import checks

CONFIG_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs'
)
CONFIG_FILES = sorted(
    os.path.basename(p) for p in glob.glob(os.path.join(CONFIG_DIR, '*.py'))
)


def _load(load_config, name, tmp_path):
  arg = None
  if name == 'folder.py':  # needs a folder of class subfolders
    for label in ('cat', 'dog'):
      (tmp_path / label).mkdir(exist_ok=True)
    arg = f'dir={tmp_path}'
  return load_config(name, arg)


@pytest.mark.parametrize('name', CONFIG_FILES)
def test_every_config_loads_validates_and_is_locked(
    load_config, name, tmp_path
):
  config = _load(load_config, name, tmp_path)
  checks.validate(config)
  config.seed = 7  # an override of an existing field
  assert config.seed == 7
  with pytest.raises(AttributeError):
    config.sed = 7  # a typo is not a new field
  with pytest.raises(TypeError):
    config.model.depth = 'deep'


def test_argument_strings(load_config):
  c = load_config('cifar10.py', 'depth=56,gated=false,target=0.5')
  assert (c.model.depth, c.model.gated, c.loss.target) == (56, False, 0.5)
  c = load_config('imagenet.py', 'resnet101,t=0.3')
  assert (c.model.depth, c.loss.target, c.loss.target_schedule) == (
      101,
      0.3,
      'resnet101_reference',
  )
  assert load_config('imagenet.py').model.depth == 50


def test_every_field_of_every_config_is_described(load_config, tmp_path):
  fields = set()
  for name in CONFIG_FILES:
    paths = config_lib.field_paths(_load(load_config, name, tmp_path))
    missing = [p for p in paths if p not in config_lib.DESCRIPTIONS]
    assert not missing, (
        f'configs/{name}: no description in config_lib.DESCRIPTIONS for '
        f'{", ".join(missing)}'
    )
    fields.update(paths)
  # and none of a field that no config has
  assert sorted(set(config_lib.DESCRIPTIONS) - fields) == []
