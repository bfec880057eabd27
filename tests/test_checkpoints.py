"""Tests of `adanet_jax.train.checkpoints`: a workdir remembers its model and
refuses another one untouched; `restore_from` reads any step read-only."""

import os

from conftest import tiny_config
import pytest

from adanet_jax.errors import ConfigError
from adanet_jax.train import checkpoints


def test_workdir_of_another_model_is_refused_untouched(tmp_path):
  workdir = str(tmp_path / 'w')
  checkpoints.Checkpointer(
      workdir, tiny_config()
  ).close()  # writes the model signature
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
