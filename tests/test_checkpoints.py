"""Tests of `adanet_jax.train.checkpoints`: a workdir remembers its model and
refuses another one untouched; `restore_from` reads any step read-only."""

import os

from conftest import REPO, load_repo_config, tiny_config
import jax
import numpy as np
import pytest

from adanet_jax.errors import ConfigError
from adanet_jax.infer import inference
from adanet_jax.model import factory
from adanet_jax.train import checkpoints, optim, steps
from adanet_jax.train import plan as plan_lib


def test_workdir_of_another_model_is_refused_untouched(tmp_path):
  workdir = str(tmp_path / 'w')
  # writes the model signature
  checkpoints.Checkpointer(workdir, tiny_config()).close()
  before = {
      p: os.path.getmtime(os.path.join(r, p))
      for r, _, ps in os.walk(workdir)
      for p in ps
  }
  with pytest.raises(
      ConfigError,
      match=r'holds checkpoints of a different model \(model.depth: '
      r'checkpoint has 8, config has 14\)',
  ):
    checkpoints.Checkpointer(workdir, tiny_config(model__depth=14))
  after = {
      p: os.path.getmtime(os.path.join(r, p))
      for r, _, ps in os.walk(workdir)
      for p in ps
  }
  assert before == after
  assert checkpoints.model_signature(tiny_config())['model.depth'] == 8


def test_scan_blocks_does_not_change_the_model(tmp_path):
  # Scanned or unrolled blocks have the same variables: one workdir serves both.
  workdir = str(tmp_path / 'w')
  checkpoints.Checkpointer(
      workdir, tiny_config(model__scan_blocks='off')
  ).close()
  checkpoints.Checkpointer(
      workdir, tiny_config(model__scan_blocks='on')
  ).close()
  assert 'model.scan_blocks' not in checkpoints.model_signature(tiny_config())


def test_restore_from_a_missing_path_names_it(tmp_path):
  with pytest.raises(
      ConfigError, match='is not a workdir or checkpoint directory'
  ):
    checkpoints.restore_from(str(tmp_path / 'none'), state=None)


V1_WORKDIR = os.path.join(REPO, 'tests', 'data', 'workdir_v1_digits8')


def _v1_command_config(**overrides):
  """The config of the command that trained `V1_WORKDIR` (its config.json
  says so), today's fields at their defaults."""
  config = load_repo_config('digits.py', 'depth=8')
  config.train.batch_size = 32
  config.train.num_epochs = 0.2
  config.eval.batch_size = 40
  config.checkpoint.every_steps = 0
  for key, value in overrides.items():
    section, field = key.split('__')
    config[section][field] = value
  return config


def test_a_workdir_of_the_first_version_resumes_its_command():
  # Its config.json lacks today's fields and holds the replaced
  # optim.decay_epochs: neither counts as a change.
  assert checkpoints.check_workdir(V1_WORKDIR, _v1_command_config()) == {}
  assert checkpoints.check_workdir(
      V1_WORKDIR,
      _v1_command_config(train__log_every_steps=2, data__data_dir='/d'),
  ) == {'data.data_dir': ('', '/d'), 'train.log_every_steps': (44, 2)}
  with pytest.raises(ConfigError) as refused:
    checkpoints.check_workdir(
        V1_WORKDIR, _v1_command_config(optim__base_learning_rate=0.2)
    )
  assert str(refused.value) == (
      f'workdir {V1_WORKDIR} holds checkpoints (up to step 9) of a run with '
      'another config (optim.base_learning_rate: 0.1 -> 0.2): resuming would '
      'change what its steps mean; use another workdir, or pass '
      '--allow_config_change to continue it with the new values (recorded '
      'in config_history.jsonl); nothing was changed'
  )
  assert checkpoints.check_workdir(
      V1_WORKDIR,
      _v1_command_config(optim__base_learning_rate=0.2),
      allow_config_change=True,
  ) == {'optim.base_learning_rate': (0.1, 0.2)}


def test_init_from_a_step_directory_loads_that_step(tmp_path):
  config = _v1_command_config()
  tx, _ = optim.create_optimizer(plan_lib.make_plan(config, 1).optimizer)
  abstract = steps.abstract_train_state(
      factory.create_model(config),
      tx,
      (8, 8, 1),
      jax.sharding.SingleDeviceSharding(jax.devices()[0]),
  )
  start = checkpoints.start_state(
      str(tmp_path / 'w'), abstract, f'{V1_WORKDIR}/checkpoints/9'
  )
  assert not os.path.exists(tmp_path / 'w')
  loaded = inference.load(V1_WORKDIR)
  jax.tree.map(
      np.testing.assert_array_equal,
      (start.params, start.batch_stats),
      (loaded.params, loaded.batch_stats),
  )
  with pytest.raises(
      ConfigError,
      match=r"^init_from='.*/checkpoints/8' is not a workdir or checkpoint "
      'directory$',
  ):
    checkpoints.start_state(
        str(tmp_path / 'w'), abstract, f'{V1_WORKDIR}/checkpoints/8'
    )
