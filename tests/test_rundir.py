"""Tests of `adanet_jax.train.rundir`: the run directory's files and their readers."""

import json
import os

from conftest import fill, load_repo_config, make_immutable
import numpy as np
import pytest

from adanet_jax.errors import ConfigError, WorkdirWriteError
from adanet_jax.train import rundir


def test_config_round_trips(tmp_path):
  config = load_repo_config('cifar10.py', 'depth=20')
  rundir.write_config(str(tmp_path), config)
  assert rundir.read_config(str(tmp_path)).to_dict() == config.to_dict()
  assert not os.path.exists(tmp_path / 'config.json.tmp')


def test_a_directory_without_config_is_named_with_a_hint(tmp_path):
  with pytest.raises(
      ConfigError,
      match=r'has no config.json: not a workdir written by the '
      r'trainer \(train one with `make train`',
  ):
    rundir.read_config(str(tmp_path))


def test_last_eval_of_a_mode(tmp_path):
  records = [
      {'step': 2, 'train/loss': 1.0},
      {
          'step': 2,
          'eval/deterministic/accuracy': 0.5,
          'eval/expected/accuracy': 0.6,
      },
      {
          'step': 4,
          'eval/deterministic/accuracy': 0.7,
          'eval/deterministic/gate_rates': [1],
      },
  ]
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.write(''.join(json.dumps(r) + '\n' for r in records))
  assert rundir.read_metrics(str(tmp_path)) == records
  assert rundir.last_eval(str(tmp_path), 'deterministic') == {
      'step': 4,
      'accuracy': 0.7,
      'gate_rates': [1],
  }
  assert rundir.last_eval(str(tmp_path), 'expected') == {
      'step': 2,
      'accuracy': 0.6,
  }
  assert rundir.last_eval(str(tmp_path), 'sample') is None
  assert rundir.last_eval(str(tmp_path / 'none'), 'sample') is None


def test_class_block_rates_file(tmp_path):
  path = rundir.write_class_block_rates(
      str(tmp_path), 22, 'expected', np.array([[0.5, 1.0], [0.25, 0.0]])
  )
  assert path == str(
      tmp_path / 'eval' / 'class_block_rates_expected_step00000022.csv'
  )
  assert open(path).read() == (
      'class,block0,block1\n0,0.500000,1.000000\n' '1,0.250000,0.000000\n'
  )


def test_sweep_status(tmp_path):
  assert rundir.read_sweep_status(str(tmp_path)) == {}
  rundir.write_sweep_status(str(tmp_path), {'status': 'done', 'wall_s': 1.5})
  assert rundir.read_sweep_status(str(tmp_path)) == {
      'status': 'done',
      'wall_s': 1.5,
  }


def test_metrics_past_the_restored_step_and_a_cut_line_are_dropped(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  records = [{'step': s, 'train/loss': 1.0 / s} for s in (2, 4, 6)] + [
      {'step': 6, 'eval/x': 1}
  ]
  path.write_text(
      ''.join(json.dumps(r) + '\n' for r in records) + '{"step": 8, "tr'
  )
  # killed after step 6's log, resumed from 4
  rundir.drop_metrics_after(str(tmp_path), 4)
  assert [json.loads(l) for l in path.read_text().splitlines()] == records[:2]
  before = path.stat().st_mtime_ns
  rundir.drop_metrics_after(str(tmp_path), 4)  # nothing to drop: not rewritten
  assert path.stat().st_mtime_ns == before
  # no file yet: nothing made
  rundir.drop_metrics_after(str(tmp_path / 'none'), 0)
  assert not (tmp_path / 'none').exists()


def test_a_write_on_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(
    small_disk,
):
  disk = small_disk('64k')
  config = load_repo_config('cifar10.py', 'depth=20')
  rundir.write_config(str(disk), config)
  before = (disk / 'config.json').read_text()
  fill(disk)
  config.seed += 1
  with pytest.raises(OSError, match='No space left on device'):
    rundir.write_config(str(disk), config)
  assert (disk / 'config.json').read_text() == before
  assert sorted(os.listdir(disk)) == ['config.json', 'filler']


def test_reported_file_is_one_line_naming_the_path_and_the_os_error(
    small_disk,
):
  disk = small_disk('64k')
  (disk / 'locked').mkdir()
  make_immutable(disk / 'locked')
  path = str(disk / 'locked' / 'x.csv')
  with pytest.raises(WorkdirWriteError) as e:
    with rundir.reported_file(path, 'nothing changed') as f:
      f.write('a,b\n')
  assert str(e.value) == (
      f'writing {path} failed (Operation not permitted [errno 1]); nothing '
      'changed'
  )
  assert WorkdirWriteError.exit_code == 1
  assert os.listdir(disk / 'locked') == []
