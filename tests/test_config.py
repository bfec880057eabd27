"""Tests of `adanet_jax.tools.config`: every field of a resolved config, its
value and its description, one line each."""

import os
import types

from conftest import REPO

from adanet_jax import config_lib
from adanet_jax.tools import config as config_tool

DIGITS = os.path.join(REPO, 'configs', 'digits.py')


def test_prints_every_field_with_its_value_and_description(capsys):
  config_tool.main(
      types.SimpleNamespace(
          config=f'{DIGITS}:depth=8',
          overrides={
              'train.num_epochs': '3',
              'loss.targets': '(0.5, 0.7, 0.9)',
          },
      )
  )
  lines = capsys.readouterr().out.splitlines()
  assert [line.split(' = ')[0] for line in lines] == sorted(
      config_lib.field_paths(config_lib.load_config(DIGITS))
  )
  for line in (
      'model.depth = 8  # layers: 6n+2 (cifar_resnet) | 6n+4 (wide_resnet) '
      '| 50, 101, 152 (imagenet_resnet)',
      "data.name = 'digits'  # dataset: digits | cifar10 | cifar100 | "
      'imagenet2012 | folder',
      'train.num_epochs = 3.0  # length of the training, in epochs',
      'loss.targets = (0.5, 0.7, 0.9)  # explicit per-block targets; overrides '
      'the schedule',
      "optim.schedule = 'cosine'  # learning-rate schedule after warmup: "
      'step | cosine | constant',
  ):
    assert line in lines
