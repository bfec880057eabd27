"""Tests of `adanet_jax.cli`: an expected failure is one line on stderr and a
non-zero exit, an unexpected one keeps its traceback, overrides reach the
entry point, and the training entry point refuses a bad command line before
it creates anything."""

import os
import subprocess
import sys

import pytest

from conftest import REPO, run_module

# A tiny entry point: flags --fail (an expected failure) and --crash (a bug).
ENTRY_POINT = '''
from absl import flags
from adanet_jax import cli, errors

def define_flags():
  return dict(fail=flags.DEFINE_bool('fail', False, ''),
              crash=flags.DEFINE_bool('crash', False, ''))

def main(args):
  if args.fail:
    raise errors.ConfigError('the field x=1 must be 2')
  if args.crash:
    raise RuntimeError('a bug')
  print('overrides', sorted(args.overrides.items()))

cli.run(main, define_flags)
'''


def _entry_point(*args):
  return subprocess.run([sys.executable, '-c', ENTRY_POINT, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('args,code,line', [
    (['--fail'], 2, 'error: the field x=1 must be 2'),
    (['--colour=red'], 2, 'error: Unknown command line flag \'colour\''),
    (['extra'], 2, 'error: unexpected arguments: extra'),
    (['--config.a.b'], 2, "error: '--config.a.b' needs the form --config.<field>=<value>"),
])
def test_expected_failures_are_one_line(args, code, line):
  out = _entry_point(*args)
  assert out.returncode == code
  assert out.stderr.strip().splitlines()[-1].startswith(line), out.stderr
  assert 'Traceback' not in out.stderr


def test_unexpected_failures_keep_their_traceback():
  out = _entry_point('--crash')
  assert out.returncode == 1
  assert 'Traceback' in out.stderr and 'RuntimeError: a bug' in out.stderr


def test_overrides_reach_the_entry_point():
  out = _entry_point('--config.loss.target=0.5', '--config.seed=3')
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "overrides [('loss.target', '0.5'), ('seed', '3')]"


@pytest.mark.parametrize('args,line', [
    (['--config.optim.lambda=1'], 'error: --config.optim.lambda names no field of the config'),
    (['--config.optim.base_learning_rate=0'], 'error: optim.base_learning_rate=0.0 must be > 0'),
])
def test_training_refuses_a_bad_command_line_creating_nothing(tmp_path, args, line):
  out = run_module('adanet_jax.main', '--config=configs/digits.py', f'--workdir={tmp_path}/w',
                   *args)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith(line), out.stderr[-2000:]
  assert 'Traceback' not in out.stderr
  assert not os.path.exists(tmp_path / 'w')
