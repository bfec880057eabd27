"""Tests of `adanet_jax.runtime.cli`: an expected failure of any entry point is one
line on stderr (`error: ...`), a non-zero exit, no traceback and no file
created or changed; an unexpected one keeps its traceback; overrides reach
the entry point."""

import os
import signal
import subprocess
import sys
import time

from conftest import REPO, snapshot
import pytest

from adanet_jax import config_lib
from adanet_jax.train import rundir

# A tiny entry point: flags --fail (an expected failure) and --crash (a bug).
ENTRY_POINT = """
from absl import flags
from adanet_jax import errors
from adanet_jax.runtime import cli

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
"""


def _entry_point(*args):
  return subprocess.run(
      [sys.executable, '-c', ENTRY_POINT, *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )


@pytest.mark.parametrize(
    'args,code,line',
    [
        (['--fail'], 2, 'error: the field x=1 must be 2'),
        (['--colour=red'], 2, "error: Unknown command line flag 'colour'"),
        (['extra'], 2, 'error: unexpected arguments: extra'),
        (
            ['--config.a.b'],
            2,
            "error: '--config.a.b' needs the form --config.<field>=<value>",
        ),
    ],
)
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
  assert (
      out.stdout.strip() == "overrides [('loss.target', '0.5'), ('seed', '3')]"
  )


DIGITS = 'configs/digits.py'

SWEEP_WITH_BAD_TARGET = """
import importlib.util, os
path = os.path.join({repo!r}, 'configs', 'digits.py')
spec = importlib.util.spec_from_file_location('digits', path)
digits = importlib.util.module_from_spec(spec)
spec.loader.exec_module(digits)
get_config = digits.get_config

def get_sweeps():
  return {{'bad': [{{'loss.target': 0.5}}, {{'loss.target': 1.5}}]}}
"""

# (entry point, arguments with {tmp} for the test's directory, the one line).
CASES = {
    'keyword in override path': (
        'main',
        [f'--config={DIGITS}', '--workdir={tmp}/w', '--config.optim.lambda=1'],
        'error: --config.optim.lambda names no field of the config; the '
        'fields of optim: base_batch_size, base_learning_rate, decay_factor, '
        'decay_fractions, momentum, nesterov, schedule, warmup_epochs, '
        'weight_decay',
    ),
    'keywords in a wrong path': (
        'main',
        [f'--config={DIGITS}', '--workdir={tmp}/w', '--config.this.is.wrong=2'],
        'error: --config.this.is.wrong names no field of the config; configs are locked: '
        'override only fields the config file defines',
    ),
    'config tool, misspelt group': (
        'tools.config',
        [f'--config={DIGITS}', '--config.trian.num_epochs=5'],
        'error: --config.trian.num_epochs names no field of the config; did '
        'you mean train.num_epochs?',
    ),
    'missing config file': (
        'main',
        ['--config=configs/nope.py', '--workdir={tmp}/w'],
        "error: config file 'configs/nope.py' does not exist",
    ),
    'config syntax error': (
        'main',
        ['--config={tmp}/syntax.py', '--workdir={tmp}/w'],
        "error: config file '{tmp}/syntax.py' has a syntax error at line 1: expected ':'",
    ),
    'unknown arg key': (
        'main',
        [f'--config={DIGITS}:depthh=8', '--workdir={tmp}/w'],
        "error: config argument 'depthh' is unknown; allowed: depth, gated, target, epochs",
    ),
    'workdir is a file': (
        'main',
        [f'--config={DIGITS}', '--workdir={tmp}/afile'],
        'error: cannot create workdir {tmp}/afile: File exists',
    ),
    'init_from nowhere': (
        'main',
        [
            f'--config={DIGITS}',
            '--workdir={tmp}/w',
            '--config.init_from={tmp}/nothing',
        ],
        "error: init_from='{tmp}/nothing' is not a workdir or checkpoint directory",
    ),
    'targets that are no numbers': (
        'main',
        [
            f'--config={DIGITS}',
            '--workdir={tmp}/w',
            '--config.loss.targets=(a,b)',
        ],
        'error: --config.loss.targets=(a,b): not a valid tuple (its elements '
        'must be numbers or quoted strings)',
    ),
    'resume with another batch size': (
        'main',
        [
            f'--config={DIGITS}:depth=8',
            '--workdir={tmp}/trained',
            '--config.train.batch_size=64',
        ],
        'error: workdir {tmp}/trained holds checkpoints (up to step 20) of a '
        'run with another config (train.batch_size: 128 -> 64): resuming would '
        'change what its steps mean; use another workdir, or pass '
        '--allow_config_change to continue it with the new values (recorded '
        'in config_history.jsonl); nothing was changed',
    ),
    'learning rate 0': (
        'main',
        [
            f'--config={DIGITS}',
            '--workdir={tmp}/w',
            '--config.optim.base_learning_rate=0.0',
        ],
        'error: optim.base_learning_rate=0.0 must be > 0',
    ),
    'negative epochs': (
        'main',
        [
            f'--config={DIGITS}',
            '--workdir={tmp}/w',
            '--config.train.num_epochs=-1.0',
        ],
        'error: train.num_epochs=-1.0 must be > 0',
    ),
    'negative momentum': (
        'main',
        [
            f'--config={DIGITS}',
            '--workdir={tmp}/w',
            '--config.optim.momentum=-0.5',
        ],
        'error: optim.momentum=-0.5 must be in [0, 1)',
    ),
    'keep 0 checkpoints': (
        'main',
        [
            f'--config={DIGITS}',
            '--workdir={tmp}/w',
            '--config.checkpoint.keep=0',
        ],
        'error: checkpoint.keep=0 must be >= 1 (the checkpoints kept to resume from)',
    ),
    'sweep root is a file': (
        'tools.sweep',
        [
            f'--config={DIGITS}',
            '--sweep=smoke',
            '--root={tmp}/afile',
            '--plan_only',
        ],
        'error: --root={tmp}/afile is a file, not a directory',
    ),
    'summary of a missing root': (
        'tools.sweep',
        ['--summary_only', '--root={tmp}/nothing'],
        'error: --root={tmp}/nothing is not a directory: nothing to summarize',
    ),
    'parallel 0': (
        'tools.sweep',
        [
            f'--config={DIGITS}',
            '--sweep=smoke',
            '--root={tmp}/sweep',
            '--parallel=0',
        ],
        'error: --parallel=0 must be >= 1',
    ),
    'sweep point out of range': (
        'tools.sweep',
        [
            '--config={tmp}/bad_sweep.py',
            '--sweep=bad',
            '--root={tmp}/sweep',
            '--plan_only',
        ],
        'error: sweep point target-1.5: loss.target=1.5 is outside (0, 1]: a target is the '
        'fraction of images that execute a block',
    ),
    'common override out of range': (
        'tools.sweep',
        [
            f'--config={DIGITS}',
            '--sweep=smoke',
            '--root={tmp}/sweep',
            '--plan_only',
            '--config.gates.temperature=0.0',
        ],
        'error: sweep point target-0.3_seed-0: gates.temperature=0.0 must be > 0',
    ),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize('case', sorted(CASES))
def test_expected_failure_of_an_entry_point_is_one_line(tmp_path, case):
  module, args, line = CASES[case]
  (tmp_path / 'syntax.py').write_text(
      'def get_config(arg=None)\n  return None\n'
  )
  (tmp_path / 'bad_sweep.py').write_text(
      SWEEP_WITH_BAD_TARGET.format(repo=REPO)
  )
  (tmp_path / 'afile').write_text('not a directory\n')
  # A workdir trained to step 20 by `main --config=configs/digits.py:depth=8`
  # (what the refusal reads of it: its config and a step directory).
  (tmp_path / 'trained' / 'checkpoints' / '20').mkdir(parents=True)
  rundir.write_config(
      str(tmp_path / 'trained'),
      config_lib.load_config(os.path.join(REPO, DIGITS) + ':depth=8'),
  )
  before = snapshot(tmp_path)
  out = subprocess.run(
      [
          sys.executable,
          '-m',
          f'adanet_jax.{module}',
          *(a.format(tmp=tmp_path) for a in args),
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=110,
  )
  assert out.returncode == 2, out.stderr[-3000:]
  assert [l for l in out.stderr.splitlines() if l.startswith('error')] == [
      line.format(tmp=tmp_path)
  ], out.stderr[-3000:]
  assert 'Traceback' not in out.stderr + out.stdout
  assert snapshot(tmp_path) == before


def _holds_back(pid: int, signum: int) -> bool:
  """Whether the main thread of `pid` has `signum` blocked (SigBlk)."""
  try:
    with open(f'/proc/{pid}/status') as f:
      mask = next(l for l in f if l.startswith('SigBlk:')).split()[1]
  except (OSError, StopIteration):
    return False
  return bool(int(mask, 16) >> (signum - 1) & 1)


def test_ctrl_c_while_the_trainer_imports_is_one_line(tmp_path):
  workdir = tmp_path / 'w'
  proc = subprocess.Popen(
      [
          sys.executable,
          '-m',
          'adanet_jax.main',
          '--config=configs/digits.py:depth=8',
          f'--workdir={workdir}',
      ],
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  # Sent while it imports JAX and the trainer (the signals held back then),
  # where Python's own Ctrl-C printed a traceback of the imports.
  while proc.poll() is None and not _holds_back(proc.pid, signal.SIGINT):
    time.sleep(0.001)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 75, err
  assert err.splitlines() == [
      'error: stopped by SIGINT before training started (nothing to save); '
      'run the same command again'
  ]
  assert out == ''
  assert not workdir.exists()
