"""Sweeps: run, kill mid-sweep, resume without redoing points, summarize, one
compilation of the train step for the whole sweep; bad input."""

import csv
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import types

from conftest import REPO, fill, run_module
import pytest

from adanet_jax.errors import WorkdirWriteError
from adanet_jax.tools import sweep, sweep_summary

TINY = [
    '--config=configs/digits.py:depth=8',
    '--sweep=smoke',
    '--config.train.num_epochs=0.2',
    '--config.train.batch_size=64',
    '--config.eval.batch_size=120',
]


def _sweep_command(root, *extra):
  return [
      sys.executable,
      '-m',
      'adanet_jax.tools.sweep',
      f'--root={root}',
      *TINY,
      *extra,
  ]


def _env(cache_dir=None):
  env = dict(os.environ)
  # the points run on one device, as on a user's machine
  env.pop('XLA_FLAGS', None)
  # a fresh persistent compilation cache of this test alone
  if cache_dir is not None:
    env['ADANET_JAX_CACHE_DIR'] = str(cache_dir)
  return env


def _compile_records(workdir):
  records = [
      json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))
  ]
  return [r for r in records if 'run/compile_s' in r]


def _last_eval(workdir):
  records = [
      json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))
  ]
  return [r for r in records if 'eval/deterministic/accuracy' in r][-1]


@pytest.mark.timeout(400)
def test_sweep_survives_a_kill_resumes_summarizes_and_compiles_once(tmp_path):
  root, env = tmp_path / 'sweep', _env(tmp_path / 'cache')
  launcher = subprocess.Popen(
      _sweep_command(root),
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
  )
  first = root / 'target-0.3_seed-0' / 'sweep_status.json'
  deadline = time.time() + 200
  while (
      not first.exists() and time.time() < deadline and launcher.poll() is None
  ):
    time.sleep(0.2)
  # mid-sweep: point 1 done, point 2 running
  launcher.send_signal(signal.SIGKILL)
  launcher.wait()
  assert json.loads(first.read_text())['status'] == 'done'
  assert not (root / 'target-0.7_seed-0' / 'sweep_status.json').exists()
  first_log = (root / 'target-0.3_seed-0' / 'log.txt').read_text()

  out = subprocess.run(
      _sweep_command(root, '--progress_every=1'),
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert '1 of 3 points already done' in out.stdout
  # a progress line while the last point runs
  last = root / 'target-0.7_seed-0'
  assert re.search(
      rf'^running target-0\.7_seed-0: .* \| log {re.escape(str(last))}/log\.txt$',
      out.stdout,
      re.M,
  ), out.stdout
  assert 'target-0.3_seed-0 [done]' in out.stdout
  assert (
      root / 'target-0.3_seed-0' / 'log.txt'
  ).read_text() == first_log  # not rerun

  rows = list(csv.DictReader(open(root / 'summary.csv')))
  assert [r['point'] for r in rows] == [
      'target-0.3_seed-0',
      'target-0.5_seed-0',
      'target-0.7_seed-0',
  ]
  for row, target in zip(rows, ('0.3', '0.5', '0.7')):
    workdir = root / row['point']
    config = json.load(open(workdir / 'config.json'))
    assert config['loss']['target'] == float(target)
    assert config['train']['num_epochs'] == 0.2
    assert row['overrides'] == f'loss.target={target} seed=0'
    assert row['status'] == 'done'
    last = _last_eval(workdir)
    assert float(row['accuracy']) == last['eval/deterministic/accuracy']
    assert (
        float(row['macs_per_image'])
        == last['eval/deterministic/macs_per_image']
    )
    assert float(row['paper_gflops']) == last['eval/deterministic/paper_gflops']
  # The points differ only in a runtime value: the first compiles the train
  # step, every other launch (the killed one included) loads it from the cache.
  cached = {
      r['point']: [
          rec['run/compile_cached']
          for rec in _compile_records(root / r['point'])
      ]
      for r in rows
  }
  assert cached['target-0.3_seed-0'] == [0.0]
  assert set(cached['target-0.5_seed-0']) == {1.0} and cached[
      'target-0.7_seed-0'
  ] == [1.0]
  assert [r['compile_cached'] for r in rows] == ['0', '1', '1']
  for row in rows:
    first = _compile_records(root / row['point'])[0]
    assert float(row['compile_s']) == round(first['run/compile_s'], 2) > 0
  assert (root / 'accuracy_vs_gflops.png').stat().st_size > 10_000
  assert (
      '| target-0.5_seed-0 | loss.target=0.5 seed=0 | done |'
      in (root / 'summary.md').read_text()
  )


@pytest.mark.parametrize(
    'extra,message',
    [
        (
            ['--sweep=nope'],
            "--sweep='nope' is not defined by configs/digits.py; its sweeps: pareto, "
            'smoke, targets',
        ),
        (
            ['--config.loss.targt=0.5'],
            'error: sweep point target-0.3_seed-0: --config.loss.targt '
            'names no field of the config; did you mean loss.target?\n',
        ),
        (
            ['--config.train.batch_size=many'],
            'error: sweep point target-0.3_seed-0: '
            '--config.train.batch_size=many: not a valid int',
        ),
    ],
)
def test_bad_sweep_input_starts_nothing(tmp_path, extra, message):
  root = tmp_path / 'sweep'
  out = subprocess.run(
      _sweep_command(root, *extra),
      cwd=REPO,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert out.returncode != 0
  assert message in out.stderr, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr
  assert not root.exists()


def test_root_of_another_sweep_is_refused(tmp_path):
  root = tmp_path / 'sweep'
  plan = subprocess.run(
      # `--root=~/x`, which a shell leaves unexpanded, is the home's x
      _sweep_command('~/sweep', '--plan_only'),
      cwd=REPO,
      env={**_env(), 'HOME': str(tmp_path)},
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert plan.returncode == 0 and 'sweep plan: 3 points' in plan.stdout
  assert (root / 'commands.sh').read_text().count('adanet_jax.main') == 3
  other = subprocess.run(
      _sweep_command(root, '--config.seed=1'),
      cwd=REPO,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert other.returncode == 2
  assert other.stderr.strip().splitlines()[-1] == (
      f'error: --root={root} holds a different sweep (configs/digits.py:'
      'depth=8 --sweep=smoke): --config.seed: unset -> 1; use another root'
  )
  assert sorted(os.listdir(root)) == ['commands.sh', 'sweep.json']


def _processes_mentioning(text):
  """Pids of live processes whose command line contains `text`."""
  pids = []
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        if text.encode() in f.read():
          pids.append(int(pid))
    except OSError:
      pass
  return pids


@pytest.mark.timeout(300)
def test_ctrl_c_stops_the_points_and_says_how_to_resume(tmp_path):
  root = tmp_path / 'sweep'
  launcher = subprocess.Popen(
      _sweep_command(root, '--parallel=2'),
      cwd=REPO,
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  logs = [
      root / name / 'log.txt'
      for name in ('target-0.3_seed-0', 'target-0.5_seed-0')
  ]
  deadline = time.time() + 200
  # Both points are in training set-up (their first log line is out).
  while (
      time.time() < deadline
      and launcher.poll() is None
      and not all(log.exists() and 'JAX ' in log.read_text() for log in logs)
  ):
    time.sleep(0.2)
  # the sweep and its two points
  assert len(_processes_mentioning(str(root))) == 3
  launcher.send_signal(signal.SIGINT)
  stdout, stderr = launcher.communicate(timeout=120)
  assert launcher.returncode == 1, stdout[-2000:] + stderr[-2000:]
  assert 'Traceback' not in stdout + stderr
  assert stderr.strip().splitlines() == [
      f'error: sweep interrupted (2 running point(s) stopped); rerun to resume: python -m '
      f'adanet_jax.tools.sweep --root={root} {" ".join(TINY)} --parallel=2'
  ]
  assert _processes_mentioning(str(root)) == []  # no orphaned point
  for log in logs:  # interrupted, not failed: a rerun resumes them
    assert not (log.parent / 'sweep_status.json').exists()


def test_coinciding_points_are_spread():
  from adanet_jax.tools import sweep_summary  # pylint: disable=import-outside-toplevel

  points = [(1.0, 95.0), (2.0, 96.0), (1.0, 95.0), (1.0001, 95.0), (3.0, 97.0)]
  assert sweep_summary.coincident_shifts(points, (2.0, 2.0)) == [
      (-3.5, 0.0),
      (0.0, 0.0),
      (3.5, 0.0),
      (0.0, 3.5),
      (0.0, 0.0),
  ]


def test_pareto_figure_labels_do_not_overlap(tmp_path):
  from adanet_jax.tools import sweep_summary  # pylint: disable=import-outside-toplevel
  # Twelve points, most within 0.4% accuracy and 10% compute of each other,
  # the last two on the same spot (t = 1.0 and the gates-off baseline).
  accuracy = [
      0.9510,
      0.9522,
      0.9515,
      0.9524,
      0.9525,
      0.9503,
      0.9501,
      0.9534,
      0.9510,
      0.9509,
      0.9540,
  ]
  rows = [
      dict(
          point=f'target-{t}_seed-0',
          accuracy=a,
          gflops_per_image=0.0015 * (0.9 + 0.1 * t),
          gated=True,
          eval_mode='deterministic',
      )
      for t, a in zip(
          (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 1.0), accuracy
      )
  ]
  rows.append(dict(rows[-1], point='gated-False_seed-0', gated=False))
  boxes = sweep_summary.plot_pareto(
      rows, str(tmp_path / 'f.png'), 'digits.py --sweep=targets'
  )
  assert len(boxes) == 12
  assert [
      (i, j)
      for i in range(12)
      for j in range(i)
      if sweep_summary._overlap(boxes[i], boxes[j])
  ] == []  # pylint: disable=protected-access
  # 10x5.5 in
  assert all(
      b[0] >= 0 and b[1] >= 0 and b[2] <= 1000 and b[3] <= 550 for b in boxes
  )


def test_gated_or_plain_comes_from_the_config(tmp_path):
  from adanet_jax.tools import sweep_summary  # pylint: disable=import-outside-toplevel

  for name, gated in (('a', False), ('b', True)):
    workdir = tmp_path / name
    workdir.mkdir()
    (workdir / 'sweep_status.json').write_text(
        json.dumps({'status': 'done', 'overrides': {'seed': 0}, 'wall_s': 1.0})
    )
    (workdir / 'config.json').write_text(
        json.dumps(
            {'model': {'gated': gated}, 'gates': {'eval_modes': ['expected']}}
        )
    )
    row = sweep_summary.read_point(str(workdir))
    assert (row['gated'], row['eval_mode'], row['overrides']) == (
        gated,
        'expected',
        'seed=0',
    )


# A config whose sweep has tuple values, next to a simple point.
TUPLE_SWEEP = """
import importlib.util, os
path = os.path.join({repo!r}, 'configs', 'digits.py')
spec = importlib.util.spec_from_file_location('digits', path)
digits = importlib.util.module_from_spec(spec)
spec.loader.exec_module(digits)
get_config = digits.get_config

def get_sweeps():
  return {{'tuples': [
      {{'loss.targets': (0.5, 0.6, 0.7),
        'gates.eval_modes': ('deterministic', 'expected')}},
      {{'loss.target': 0.3, 'seed': 0}},
  ]}}
"""
TUPLE_POINTS = [
    'targets-0.5-0.6-0.7_eval_modes-deterministic-expected',
    'target-0.3_seed-0',
]


def test_point_names_are_short_and_shell_safe():
  from adanet_jax.tools import sweep  # pylint: disable=import-outside-toplevel

  # Today's names of simple points stay, so their roots still resume.
  assert (
      sweep.point_name({'loss.target': 0.3, 'seed': 0}) == 'target-0.3_seed-0'
  )
  assert sweep.point_name({'model.gated': False}) == 'gated-False'
  assert sweep.point_name({'init_from': '/w/a'}) == 'init_from--w-a'
  assert sweep.point_name({}) == 'default'
  # A tuple and its stored form (a JSON list) name the same workdir.
  for value in ((0.5, 0.7), [0.5, 0.7]):
    assert sweep.point_name({'loss.targets': value}) == 'targets-0.5-0.7'
  assert sweep.point_name({'loss.targets': ()}) == 'targets-none'
  assert sweep.point_name({'data.name': 'a b,(c)'}) == 'name-a-b--c-'
  long = [sweep.point_name({'loss.targets': (t,) * 54}) for t in (0.5, 0.25)]
  assert [len(n) for n in long] == [80, 80]
  assert long[0].startswith('targets-0.5-0.5-') and long[0] != long[1]
  assert re.fullmatch(r'targets-(0\.5-){15}0\.5-[0-9a-f]{8}', long[0])


def _tuple_sweep(tmp_path):
  path = tmp_path / 'tuples.py'
  path.write_text(TUPLE_SWEEP.format(repo=REPO))
  return f'{path}:depth=8'


def test_tuple_points_resume_and_their_plan_is_shell_quoted(tmp_path, capsys):
  from adanet_jax import config_lib  # pylint: disable=import-outside-toplevel
  from adanet_jax.tools import sweep  # pylint: disable=import-outside-toplevel

  config_arg, root = _tuple_sweep(tmp_path), tmp_path / 'a root'
  for _ in range(2):  # the second plan finds the first's sweep.json
    assert sweep.run_sweep(config_arg, 'tuples', str(root), 1, {}, True) == {}
  assert sorted(os.listdir(root)) == ['commands.sh', 'sweep.json']
  script = root / 'commands.sh'
  assert subprocess.run(['sh', '-n', str(script)]).returncode == 0
  lines = script.read_text().splitlines()
  assert lines[0] == '#!/bin/sh' and len(lines) == 3
  printed = capsys.readouterr().out.splitlines()
  for name, line in zip(TUPLE_POINTS, lines[1:]):
    assert f'  {name} [new]: {line}' in printed
    argv = shlex.split(line)
    assert argv[:4] == [
        sys.executable,
        '-m',
        'adanet_jax.main',
        f'--config={config_arg}',
    ]
    assert argv[4] == f'--workdir={root}/{name}'
    rest, overrides = config_lib.split_overrides(argv[5:])
    assert rest == []
    config = config_lib.load_config(config_arg, overrides)
    if name.startswith('targets'):
      assert config.loss.targets == (0.5, 0.6, 0.7)
      assert config.gates.eval_modes == ('deterministic', 'expected')
    else:
      assert (config.loss.target, config.seed) == (0.3, 0)


def test_reused_root_is_refused_naming_the_differences(tmp_path):
  from adanet_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  from adanet_jax.tools import sweep  # pylint: disable=import-outside-toplevel

  config_arg, root = _tuple_sweep(tmp_path), str(tmp_path / 'root')
  sweep.run_sweep(config_arg, 'tuples', root, 1, {'seed': '1'}, True)
  stored = (tmp_path / 'root' / 'sweep.json').read_text()
  with pytest.raises(ConfigError) as refused:
    sweep.run_sweep(
        TINY[0].split('=', 1)[1], 'smoke', root, 1, {'train.num_epochs': '1'}
    )
  assert str(refused.value) == (
      f'--root={root} holds a different sweep ({config_arg} --sweep=tuples): '
      f'--config={config_arg} -> --config=configs/digits.py:depth=8; '
      '--sweep=tuples -> --sweep=smoke; --config.seed: 1 -> unset; '
      '--config.train.num_epochs: unset -> 1; gates.eval_modes in the '
      'points: ["deterministic", "expected"] -> none; loss.target in the '
      'points: 0.3 -> 0.3, 0.5, 0.7; loss.targets in the points: [0.5, 0.6, '
      '0.7] -> none; use another root'
  )
  assert (tmp_path / 'root' / 'sweep.json').read_text() == stored
  # The same values in other combinations: the points that differ.
  manifest = dict(config='c.py', sweep='s', common={})
  grid = sweep.grid(a=[1, 2], b=['x', 'y'])
  sweep.check_root(str(tmp_path), dict(manifest, points=grid))
  with pytest.raises(ConfigError) as refused:
    sweep.check_root(str(tmp_path), dict(manifest, points=grid[1:3]))
  assert str(refused.value) == (
      f'--root={tmp_path} holds a different sweep (c.py --sweep=s): points '
      'only in the stored sweep: (a=1 b="x"), (a=2 b="y"); use another root'
  )
  with pytest.raises(ConfigError) as refused:
    sweep.check_root(
        str(tmp_path), dict(manifest, points=grid + [{'b': 'x', 'a': 3}])
    )
  assert str(refused.value) == (
      f'--root={tmp_path} holds a different sweep (c.py --sweep=s): a in the '
      'points: 1, 2 -> 1, 2, 3; use another root'
  )


def test_second_launcher_on_a_root_is_refused(tmp_path):
  from adanet_jax.errors import WorkdirInUseError  # pylint: disable=import-outside-toplevel
  from adanet_jax.tools import sweep  # pylint: disable=import-outside-toplevel
  from adanet_jax.train import workdir_lock  # pylint: disable=import-outside-toplevel

  root = tmp_path / 'root'
  # This process is the first launcher.
  with workdir_lock.acquire_local(
      str(root), 'sweep.lock', 'sweep root', 'sweep'
  ):
    owner = json.loads((root / 'sweep.lock').read_text())
    with pytest.raises(WorkdirInUseError) as refused:
      sweep.run_sweep(_tuple_sweep(tmp_path), 'tuples', str(root), 1, {})
    assert os.listdir(root) == ['sweep.lock']
  assert str(refused.value) == (
      f'sweep root {root} is in use by another sweep (host '
      f'{socket.gethostname()}, pid {os.getpid()}, started {owner["start"]}); '
      'wait for it to end, or use another sweep root'
  )
  assert os.listdir(root) == []


def test_root_below_a_file_is_one_line(tmp_path):
  from adanet_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  from adanet_jax.tools import sweep  # pylint: disable=import-outside-toplevel

  (tmp_path / 'afile').write_text('x')
  root = str(tmp_path / 'afile' / 'x')
  with pytest.raises(ConfigError) as refused:
    sweep.run_sweep(_tuple_sweep(tmp_path), 'tuples', root, 1, {}, True)
  assert (
      str(refused.value) == f'--root={root}: cannot create it (Not a directory)'
  )
  assert (tmp_path / 'afile').read_text() == 'x'


@pytest.mark.parametrize('training_workdir', [False, True])
def test_summary_only_refuses_what_is_not_a_sweep_root(
    tmp_path, training_workdir
):
  from adanet_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  from adanet_jax.tools import sweep  # pylint: disable=import-outside-toplevel

  if training_workdir:
    (tmp_path / 'config.json').write_text('{}')
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(ConfigError) as refused:
    sweep.main(types.SimpleNamespace(summary_only=True, root=str(tmp_path)))
  what = (
      'a training workdir, not a sweep root'
      if training_workdir
      else 'not a sweep root'
  )
  assert str(refused.value) == (
      f'--root={tmp_path} is {what} (no sweep.json): nothing to summarize'
  )
  assert sorted(os.listdir(tmp_path)) == before


class _FakeJob:
  """A point that has ended with `code`."""

  def __init__(self, code):
    self.code = code

  def poll(self):
    return self.code

  def stop(self):
    pass


class _FakeLauncher:
  """target-0.3 trains (writes config.json) and exits 0; target-0.5's workdir
  is deleted and it exits 0 anyway (an old trainer); target-0.7's is deleted
  and it exits 1 (the trainer's WorkdirGoneError)."""

  def __init__(self, root):
    del root

  def start(self, name, command, workdir):
    del command
    if name == 'target-0.3_seed-0':
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, 'config.json'), 'w') as f:
        f.write('{}')
      return _FakeJob(0)
    shutil.rmtree(workdir, ignore_errors=True)
    return _FakeJob(0 if name == 'target-0.5_seed-0' else 1)

  def describe(self, job):
    return f'fake, exit {job.code}'


def test_point_whose_workdir_was_deleted_counts_as_failed(
    tmp_path, capsys, monkeypatch
):
  from adanet_jax.tools import sweep  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(sweep, 'POLL_S', 0.0)
  root = tmp_path / 'root'
  results = sweep.run_sweep(
      TINY[0].split('=', 1)[1], 'smoke', str(root), 3, {}, False, _FakeLauncher
  )
  assert results == {
      'target-0.3_seed-0': 'done',
      'target-0.5_seed-0': 'failed',
      'target-0.7_seed-0': 'failed',
  }
  out = capsys.readouterr().out
  assert (
      'point target-0.5_seed-0 failed (exit 0, its workdir emptied); no log.txt left\n'
      in out
  )
  assert 'point target-0.7_seed-0 failed (exit 1); no log.txt left\n' in out
  for name, code in (('target-0.5_seed-0', 0), ('target-0.7_seed-0', 1)):
    status = json.loads((root / name / 'sweep_status.json').read_text())
    assert (status['status'], status['returncode']) == ('failed', code)
  rows = list(csv.DictReader(open(root / 'summary.csv')))
  assert [(r['point'], r['status']) for r in rows] == list(results.items())


class _StoppedLauncher:
  """As the SLURM launcher: the first job of target-0.5 and of target-0.7 is
  stopped by its time limit after saving step 3 (exit 75); target-0.7's
  second job is stopped again at step 3, before it trained a step; every
  other job trains and exits 0."""

  resubmits_stopped = True

  def __init__(self, root):
    del root
    self.started = []

  def start(self, name, command, workdir):
    del command
    self.started.append(name)
    count = self.started.count(name)
    if name != 'target-0.3_seed-0' and count == 1:
      os.makedirs(os.path.join(workdir, 'checkpoints', '3'))
      return _FakeJob(75)
    if name == 'target-0.7_seed-0':
      return _FakeJob(75)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write('{}')
    return _FakeJob(0)

  def describe(self, job):
    return f'fake, exit {job.code}'


def test_point_stopped_by_its_time_limit_is_resubmitted_while_it_advances(
    tmp_path, capsys, monkeypatch
):
  from adanet_jax.tools import sweep  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(sweep, 'POLL_S', 0.0)
  points = ['target-0.3_seed-0', 'target-0.5_seed-0', 'target-0.7_seed-0']
  launchers = []

  def make(root):
    launchers.append(_StoppedLauncher(root))
    return launchers[-1]

  results = sweep.run_sweep(
      TINY[0].split('=', 1)[1],
      'smoke',
      str(tmp_path / 'root'),
      1,
      {},
      False,
      make,
  )
  assert results == {points[0]: 'done', points[1]: 'done', points[2]: 'failed'}
  # target-0.7's second stop made no progress: not submitted a third time
  assert launchers[0].started == [points[0]] + [points[1]] * 2 + [points[2]] * 2
  out = capsys.readouterr().out
  for name in points[1:]:
    assert (
        f'{name}: stopped by its time limit or a preemption after saving '
        f'step 3 (exit 75); submitting it again\n'
        f'started {name} (fake, exit ' in out
    )
  assert (
      f'point {points[2]} failed (exit 75: stopped at step 3, where its job '
      'started, so it is not submitted again; its --slurm.time is too short '
      'to train a step after start-up); no log.txt left\n' in out
  )
  status = json.loads(
      (tmp_path / 'root' / points[2] / 'sweep_status.json').read_text()
  )
  assert (status['status'], status['returncode']) == ('failed', 75)


def test_slurm_stop_signal_leaves_a_short_time_limit_time_to_train():
  # submitit's fixed 90 s signalled a 1-minute job as soon as it started
  from adanet_jax.tools import slurm_launcher  # pylint: disable=import-outside-toplevel

  assert [slurm_launcher.signal_lead_s(m) for m in (1, 2, 6, 240)] == [
      15,
      30,
      90,
      90,
  ]


def test_failed_writes_of_the_sweep_files_are_one_line_naming_the_file(
    small_disk,
):
  disk = small_disk('64k')
  root = disk / 'sweep'
  config = os.path.join(REPO, 'configs', 'digits.py') + ':depth=8'
  sweep.run_sweep(config, 'smoke', str(root), 1, {}, plan_only=True)
  (root / 'p').mkdir()  # a point's workdir
  planned = sorted(os.listdir(root)), (root / 'commands.sh').read_text()
  fill(disk)
  full = 'No space left on device [errno 28]'
  stopped = 'the sweep stopped; run the same command again to resume it'
  with pytest.raises(WorkdirWriteError) as e:
    sweep._print_plan(str(root), {}, {})  # pylint: disable=protected-access
  assert (
      str(e.value) == f'writing {root}/commands.sh failed ({full}); {stopped}'
  )
  with pytest.raises(WorkdirWriteError) as e:
    sweep._finish(  # pylint: disable=protected-access
        'p', ({}, str(root / 'p')), ['true'], 0, time.time()
    )
  assert str(e.value) == (
      f'writing {root}/p/sweep_status.json failed ({full}); {stopped}'
  )
  with pytest.raises(WorkdirWriteError) as e:
    sweep_summary.write_summary(str(root))
  assert str(e.value) == (
      f'writing {root}/summary.csv failed ({full}); the summary is '
      'incomplete; the points are as they were'
  )
  assert os.listdir(root / 'p') == []
  assert (sorted(os.listdir(root)), (root / 'commands.sh').read_text()) == (
      planned
  )
  # The entry point on a new root: the root's lock is its first file; its
  # failed write is one line and exit 1, as every other write's (it was exit
  # 2, bad input); nothing is left in the root.
  out = run_module(
      'adanet_jax.tools.sweep',
      *_sweep_command(disk / 'other', '--plan_only')[3:],
      env=_env(),
  )
  assert (out.returncode, out.stdout, out.stderr) == (
      1,
      '',
      f'error: writing {disk}/other/sweep.lock failed ({full}); the sweep '
      'did not start\n',
  )
  assert sorted(os.listdir(disk)) == ['filler', 'other', 'sweep']
  assert os.listdir(disk / 'other') == []


def test_progress_line_of_a_running_point(tmp_path, capsys):
  from adanet_jax.tools import sweep_progress  # pylint: disable=import-outside-toplevel

  workdir = tmp_path / 'target-0.3_seed-0'
  workdir.mkdir()
  log = f'{workdir}/log.txt'
  # Before the trainer wrote anything.
  assert sweep_progress.point_line('p', str(workdir)) == (
      f'running p: no step logged yet | no eval yet | log {log}'
  )
  (workdir / 'config.json').write_text(
      json.dumps({'gates': {'eval_modes': ['expected', 'deterministic']}})
  )
  records = [
      {'step': 44, 'train/progress': 0.4, 'train/eta_s': 80.0},
      {
          'step': 44,
          'eval/deterministic/accuracy': 0.5,
          'eval/expected/accuracy': 0.91234,
          'eval/expected/gate_rate': 0.61249,
      },
      {'step': 88, 'train/progress': 0.8, 'train/eta_s': 3725.4},
  ]
  # The last line is being written: no newline, cut short.
  (workdir / 'metrics.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in records) + '{"step": 110, "tr'
  )
  assert sweep_progress.point_line('target-0.3_seed-0', str(workdir)) == (
      'running target-0.3_seed-0: step 88/110 | eval at step 44 (expected '
      'gates): accuracy 91.23%, exec rate 0.612 | eta 1:02:05 | log '
      f'{log}'
  )
  # Every 30 s from the start; after a long pause, one report.
  now = [100.0]
  reporter = sweep_progress.ProgressReporter(30.0, clock=lambda: now[0])
  reported = []
  for now[0] in (129.9, 130.0, 130.1, 160.0, 400.0, 400.5, 429.9, 430.0):
    reporter.report({'p': str(tmp_path / 'none')})
    reported.append(len(capsys.readouterr().out.splitlines()))
  assert reported == [0, 1, 0, 1, 1, 0, 0, 1]
  reporter.report({})  # nothing runs: nothing printed
  never = sweep_progress.ProgressReporter(0.0, clock=lambda: now[0])
  now[0] = 1e9
  never.report({'p': str(tmp_path / 'none')})
  assert capsys.readouterr().out == ''


def test_plan_marks_interrupted_points_with_their_resume_step(tmp_path, capsys):
  from adanet_jax.tools import sweep  # pylint: disable=import-outside-toplevel

  root = tmp_path / 'root'
  steps = {
      'target-0.3_seed-0': ('done', ['110']),
      # Interrupted: two steps, orbax's unfinished directory of a third.
      'target-0.5_seed-0': (
          None,
          ['20', '40', '60.orbax-checkpoint-tmp'],
      ),
      'target-0.7_seed-0': ('failed', ['10']),
  }
  for name, (status, dirs) in steps.items():
    for d in dirs:
      (root / name / 'checkpoints' / d).mkdir(parents=True)
    (root / name / 'checkpoints' / 'model.json').write_text('{}')
    if status:
      (root / name / 'sweep_status.json').write_text(
          json.dumps({'status': status})
      )
  (root / 'new_point').mkdir()  # started, stopped before its first checkpoint
  config = TINY[0].split('=', 1)[1]
  assert sweep.run_sweep(config, 'smoke', str(root), 1, {}, True) == {}
  marks = [
      line.split(':')[0]
      for line in capsys.readouterr().out.splitlines()
      if line.startswith('  ')
  ]
  assert marks == [
      '  target-0.3_seed-0 [done]',
      '  target-0.5_seed-0 [resume from step 40]',
      '  target-0.7_seed-0 [failed, resume from step 10]',
  ]
  assert sweep._plan_state(str(root / 'new_point')) == 'new'  # pylint: disable=protected-access


def test_bad_progress_every_starts_nothing(tmp_path):
  from adanet_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  from adanet_jax.tools import sweep  # pylint: disable=import-outside-toplevel

  args = types.SimpleNamespace(
      root=str(tmp_path / 'root'),
      summary_only=False,
      config=TINY[0].split('=', 1)[1],
      sweep='smoke',
      parallel=None,
      launcher='local',
      progress_every=-1.0,
  )
  with pytest.raises(ConfigError) as refused:
    sweep.main(args)
  assert str(refused.value) == (
      '--progress_every=-1.0 must be >= 0 (seconds; 0: no progress lines)'
  )
  assert os.listdir(tmp_path) == []
