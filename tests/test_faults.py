"""Fault injection on real training processes (`python -m adanet_jax.main`):
SIGKILL at random moments, damaged checkpoints, a second launch on a live
workdir, a failing checkpoint or metrics write, a full disk (a real tmpfs);
the stop signals are in test_signals.py. Every interrupted run, rerun, must
end bit-identical (parameters, BatchNorm statistics, optimizer state) to one
uninterrupted run, shared by the module and test_signals.py.

The kill moments are drawn from a seed printed at the start of the test (set
ADANET_JAX_FAULT_SEED to replay one).
"""

import glob
import json
import os
import pathlib
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from conftest import REPO, remount, shared_once
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from adanet_jax import config_lib, errors
from adanet_jax.infer import inference
from adanet_jax.model import factory
from adanet_jax.tools import launch
from adanet_jax.train import checkpoints, rundir, workdir_lock

STEPS = 24
# Depth 8 on 8x8 digits, batch 32 over 4 CPU devices, 24 steps, a log line
# after every step, a checkpoint every 4 (the last 5 kept).
OVERRIDES = {
    'train.batch_size': 32,
    'train.num_epochs': STEPS * 32 / 1437,
    'train.sync_every_steps': 1,
    'train.log_every_steps': 1,
    'train.eval_every_epochs': 0.0,
    'eval.batch_size': 64,
    'checkpoint.every_steps': 4,
    'checkpoint.keep': 5,
}
STEP_LINE = re.compile(r'step +(\d+)/\d+ \| epoch')


def _args(workdir, **extra) -> list[str]:
  overrides = {**OVERRIDES, **extra}
  return ['--config=configs/digits.py:depth=8', f'--workdir={workdir}'] + [
      f'--config.{k}={v!r}' for k, v in overrides.items()
  ]


def _env(devices=4) -> dict:
  return launch.cpu_devices_env(os.environ, devices)


class Run:
  """A training process whose output lines are read as they come."""

  def __init__(self, command: list[str], env=None):
    # a kill can cut a character in two
    self.proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors='replace',
    )
    self.lines, self._queue = [], queue.Queue()
    threading.Thread(target=self._pump, daemon=True).start()

  def _pump(self):
    try:
      for line in self.proc.stdout:
        self._queue.put(line.rstrip('\n'))
    finally:  # the end is always seen, whatever stopped the reading
      self._queue.put(None)

  def next_line(self, timeout=1.0):
    """The next output line; '' if none came within `timeout`; None at the end."""
    try:
      line = self._queue.get(timeout=timeout)
    except queue.Empty:
      return ''
    if line is not None:
      self.lines.append(line)
    return line

  def wait_for(self, predicate, timeout=300.0):
    """Reads lines until `predicate(line)`; returns the line, or None at the end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      line = self.next_line()
      if line is None or (line and predicate(line)):
        return line
    raise AssertionError('timed out; output:\n' + '\n'.join(self.lines[-40:]))

  def finish(self, timeout=300.0) -> int:
    deadline = time.monotonic() + timeout
    while self.next_line() is not None:
      if time.monotonic() > deadline:
        raise AssertionError(
            'no end of output; last lines:\n' + '\n'.join(self.lines[-40:])
        )
    return self.proc.wait(timeout=timeout)

  @property
  def output(self) -> str:
    return '\n'.join(self.lines)


def _main(workdir, **extra) -> Run:
  return Run(
      [sys.executable, '-m', 'adanet_jax.main', *_args(workdir, **extra)]
  )


def _completed(workdir, **extra) -> Run:
  run = _main(workdir, **extra)
  assert run.finish() == 0, run.output[-4000:]
  return run


def _config():
  return config_lib.load_config(
      os.path.join(REPO, 'configs', 'digits.py') + ':depth=8',
      {k: str(v) for k, v in OVERRIDES.items()},
  )


def _final_state(workdir):
  """The latest checkpoint of `workdir` on one device, whatever topology wrote it."""
  config = _config()
  abstract = inference._abstract_state(config, factory.create_model(config), jax.devices()[0])  # pylint: disable=protected-access
  return checkpoints.restore_from(str(workdir), abstract)


def _assert_identical(workdir, reference, steps=STEPS):
  ours, ref = _final_state(workdir), _final_state(reference)
  assert int(ours.step) == int(ref.step) == steps
  for part in ('params', 'batch_stats', 'opt_state'):
    for x, y in zip(
        jax.tree.leaves(getattr(ours, part)),
        jax.tree.leaves(getattr(ref, part)),
    ):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=part)


def _logged_steps(workdir) -> list[int]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line)['step'] for line in f if 'train/loss' in line]


def shared_reference(tmp_path_factory) -> pathlib.Path:
  """The uninterrupted run's workdir, run once per session for this file and
  test_signals.py, whichever test worker asks first."""
  return pathlib.Path(
      shared_once(
          tmp_path_factory.getbasetemp(), 'faults_reference', _completed
      )
  )


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  return shared_reference(tmp_path_factory)


def _seed() -> int:
  seed = int(
      os.environ.get('ADANET_JAX_FAULT_SEED')
      or random.SystemRandom().randrange(2**31)
  )
  print(f'fault seed: {seed} (replay with ADANET_JAX_FAULT_SEED={seed})')
  return seed


def _kill_inside_a_save(run: Run, workdir) -> bool:
  """SIGKILLs `run` while orbax writes a checkpoint (its temporary directory
  exists); False if the run ended first."""
  directory = os.path.join(str(workdir), 'checkpoints')
  while run.proc.poll() is None:
    if ocp.step.tmp_checkpoints(directory):
      run.proc.kill()
      return True
    run.next_line(timeout=0.002)
  return False


@pytest.mark.timeout(900)
def test_sigkill_at_random_moments_then_resume_is_bit_identical(
    reference, tmp_path
):
  seed = _seed()
  rng = random.Random(seed)
  workdir = tmp_path / 'w'
  # 4 kills after a random number of this launch's step lines (0: during
  # start-up) plus a random delay, and one inside a checkpoint save.
  moments = [(rng.randrange(0, 6), rng.uniform(0.0, 0.2)) for _ in range(4)]
  moments.insert(rng.randrange(len(moments) + 1), 'save')
  print(f'kill moments (step lines of the launch, delay s): {moments}')
  killed_in_save = False
  for moment in moments:
    run = _main(workdir)
    if moment == 'save':
      killed_in_save = _kill_inside_a_save(run, workdir)
    else:
      lines, delay = moment
      for _ in range(lines):
        if run.wait_for(STEP_LINE.search) is None:
          break
      time.sleep(delay)
      run.proc.kill()
    code = run.finish()
    assert code in (0, -signal.SIGKILL), run.output[-3000:]
    if code == 0:
      break  # finished before the kill: nothing left to interrupt
    # The killed run's lock is left behind; the next launch takes it over.
    assert os.path.exists(workdir / rundir.LOCK_FILE) or not os.path.exists(
        workdir
    )
  assert killed_in_save, f'seed {seed}: no kill landed inside a checkpoint save'
  _completed(workdir)
  _assert_identical(workdir, reference)
  assert _logged_steps(workdir) == list(range(1, STEPS + 1))


def _sigterm_at_step_line(
    run: Run,
    pid: int,
    line_prefix: str = '',
    steps: int = STEPS,
    signum: int = signal.SIGTERM,
) -> int:
  """Sends `signum` to `pid` at the third step line (twice: the second lands
  during the save); returns the step the run says it stopped at."""
  for _ in range(3):
    assert run.wait_for(
        lambda l: l.startswith(line_prefix) and STEP_LINE.search(l)
    )
  os.kill(pid, signum)
  os.kill(pid, signum)
  assert run.finish() == errors.Preempted.exit_code, run.output[-4000:]
  stops = re.findall(
      rf'stopped by .* at step (\d+) of {steps}; saved a checkpoint of step \1; run the '
      'same command again to resume from there',
      run.output,
  )
  assert len(stops) >= 1, run.output[-4000:]
  assert 'Traceback' not in run.output
  return int(stops[0])


def _damage(step_dir, how: str) -> None:
  biggest = max(
      (p for p in glob.glob(f'{step_dir}/**/d/*', recursive=True)),
      key=os.path.getsize,
  )
  if how == 'truncated':
    with open(biggest, 'r+b') as f:
      f.truncate(100)
  elif how == 'corrupted':
    size = os.path.getsize(biggest)
    with open(biggest, 'wb') as f:
      f.write(random.Random(0).randbytes(size))
  elif how == 'emptied':
    shutil.rmtree(step_dir)
    os.mkdir(step_dir)


@pytest.mark.timeout(600)
def test_damaged_checkpoints_are_moved_aside_and_the_newest_intact_resumes(
    reference, tmp_path
):
  workdir = tmp_path / 'w'
  shutil.copytree(reference, workdir)
  ckpt = workdir / 'checkpoints'
  assert sorted(int(s) for s in os.listdir(ckpt) if s.isdigit()) == [
      8,
      12,
      16,
      20,
      24,
  ]
  _damage(ckpt / '24', 'truncated')
  _damage(ckpt / '20', 'corrupted')
  _damage(ckpt / '16', 'emptied')
  os.mkdir(ckpt / '999')  # a stray empty step directory
  # Loading reads around the damage, moving nothing.
  import adanet_jax  # pylint: disable=import-outside-toplevel

  assert adanet_jax.load(str(workdir)).step == 12
  with pytest.raises(
      errors.DamagedCheckpointError,
      match=r'checkpoint step 24 of .* is damaged \(.*\); other steps there: '
      r'8, 12, 16, 20, 999',
  ):
    adanet_jax.load(str(ckpt / '24'))
  assert sorted(os.listdir(ckpt)) == [
      '12',
      '16',
      '20',
      '24',
      '8',
      '999',
      'model.json',
  ]
  rerun = _completed(workdir)
  for step in (999, 24, 20, 16):
    assert re.search(
        rf'checkpoint step {step} does not restore \(.*\); moved to .*'
        rf'checkpoints_damaged/{step}-\d+T\d+, resuming from step 12',
        rerun.output,
    )
  assert [int(s) for s in STEP_LINE.findall(rerun.output)] == list(
      range(13, STEPS + 1)
  )
  kept_aside = sorted(
      int(n.split('-')[0]) for n in os.listdir(workdir / 'checkpoints_damaged')
  )
  assert kept_aside == [16, 20, 24, 999]
  _assert_identical(workdir, reference)
  assert _logged_steps(workdir) == list(range(1, STEPS + 1))


def _snapshot(root) -> dict:
  return {
      os.path.join(r, p): (
          os.path.getsize(os.path.join(r, p)),
          os.path.getmtime(os.path.join(r, p)),
      )
      for r, _, ps in os.walk(root)
      for p in ps
  }


@pytest.mark.timeout(300)
def test_second_launch_on_a_live_workdir_is_refused_untouched(
    reference, tmp_path
):
  workdir = tmp_path / 'w'
  shutil.copytree(reference, workdir)
  with workdir_lock.acquire(str(workdir)):  # this process is the live run
    before = _snapshot(workdir)
    run = _main(workdir)
    assert run.finish() == 2
    error_lines = [l for l in run.lines if l.startswith('error:')]
    assert error_lines == [
        f'error: workdir {workdir} is in use by another run (host '
        f'{os.uname().nodename}, pid {os.getpid()}, started '
        f'{error_lines[0].split("started ")[-1]}'
    ], run.output[-3000:]
    assert 'Traceback' not in run.output
    assert _snapshot(workdir) == before


def test_lock_of_another_host_is_taken_over_only_when_its_heartbeat_is_stale(
    tmp_path,
):
  path = tmp_path / rundir.LOCK_FILE
  path.write_text(json.dumps({'host': 'elsewhere', 'pid': 1, 'start': 'then'}))
  with pytest.raises(
      errors.WorkdirInUseError,
      match=r'in use by another run \(host elsewhere, pid 1, started then\) '
      r'\(heartbeat \d+ s ago; taken over after 600 s\)',
  ):
    workdir_lock.acquire(str(tmp_path))
  stale = time.time() - workdir_lock.STALE_S - 1
  os.utime(path, (stale, stale))
  with workdir_lock.acquire(str(tmp_path)):
    assert json.loads(path.read_text())['pid'] == os.getpid()
  assert not path.exists()


def _failing_write_run(workdir, patch: str) -> tuple[Run, list[str]]:
  """Runs the trainer with `patch` (Python run first, making a write fail as
  on a full disk) to its end; (the run, its `error:` lines). It must exit
  with status 1 and no traceback."""
  main = (
      'import sys\n'
      'from adanet_jax import main\n'
      'from adanet_jax.runtime import cli\n'
      'sys.argv = ["main"] + sys.argv[1:]\n'
      'cli.run(main.main, main.define_flags)\n'
  )
  run = Run([sys.executable, '-c', patch + main, *_args(workdir)])
  assert run.finish() == 1, run.output[-4000:]
  assert 'Traceback' not in run.output
  return run, [l for l in run.lines if l.startswith('error:')]


@pytest.mark.timeout(600)
def test_failed_checkpoint_write_stops_at_once_and_keeps_earlier_ones(tmp_path):
  # The write of step 8 fails inside orbax's asynchronous commit, as on a
  # full disk: the temporary directory cannot be renamed into place.
  workdir = tmp_path / 'w'
  inject = (
      'import errno, os\n'
      'from etils import epath\n'
      'cls = type(epath.Path("/"))\n'
      'rename = cls.rename\n'
      'def failing(self, target):\n'
      '  if os.path.basename(str(target)) == "8":\n'
      '    raise OSError(errno.ENOSPC, "No space left on device")\n'
      '  return rename(self, target)\n'
      'cls.rename = failing\n'
  )
  run, error_lines = _failing_write_run(workdir, inject)
  assert error_lines == [
      f'error: writing the checkpoint of step 8 to {workdir}/checkpoints/8 failed '
      '(No space left on device [errno 28]); training stopped; earlier '
      'checkpoints kept: 4'
  ], run.output[-4000:]
  # not one step more
  assert max(int(s) for s in STEP_LINE.findall(run.output)) == 8
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4', 'model.json']


@pytest.mark.timeout(600)
def test_failed_metrics_write_stops_with_one_line_and_the_rerun_resumes(
    reference, tmp_path
):
  # metrics.jsonl cannot take the record of step 8, as on a full disk.
  workdir = tmp_path / 'w'
  inject = (
      'import builtins, errno\n'
      'from adanet_jax.train import metrics\n'
      'class Full:\n'
      '  def __init__(self, f):\n'
      '    self.f = f\n'
      '  def write(self, text):\n'
      '    if text.startswith(\'{"step": 8,\'):\n'
      '      raise OSError(errno.ENOSPC, "No space left on device")\n'
      '    return self.f.write(text)\n'
      '  def __getattr__(self, name):\n'
      '    return getattr(self.f, name)\n'
      'def opening(path, *args, **kwargs):\n'
      '  f = builtins.open(path, *args, **kwargs)\n'
      '  return Full(f) if str(path).endswith("metrics.jsonl") else f\n'
      'metrics.open = opening\n'
  )
  run, error_lines = _failing_write_run(workdir, inject)
  assert error_lines == [
      f'error: writing the metrics of step 8 to {workdir} failed (No space '
      'left on device [errno 28]); training stopped; run the same command '
      'again to resume from the last checkpoint'
  ], run.output[-4000:]
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4', 'model.json']
  assert _logged_steps(workdir) == list(range(1, 8))
  _completed(workdir)  # space again: resumes from step 4
  _assert_identical(workdir, reference)
  assert _logged_steps(workdir) == list(range(1, STEPS + 1))


@pytest.mark.timeout(600)
def test_full_disk_at_a_checkpoint_is_one_line_and_a_bigger_disk_resumes(
    reference, small_disk
):
  # A real 3 MiB disk: the checkpoints (about 1 MiB each) fill it and one
  # fails inside TensorStore's asynchronous writes. Which one varies: the
  # space a checkpoint takes depends on how TensorStore batches its files.
  disk = small_disk('3m')
  workdir = disk / 'w'
  run = _main(workdir)
  assert run.finish() == 1, run.output[-4000:]
  assert 'Traceback' not in run.output
  assert 'Event loop is closed' not in run.output
  failed = max(int(s) for s in STEP_LINE.findall(run.output))  # not one more
  kept = list(range(4, failed, 4))
  assert failed % 4 == 0 and len(kept) >= 2, run.output[-4000:]
  assert [l for l in run.lines if l.startswith('error:')] == [
      f'error: writing the checkpoint of step {failed} to '
      f'{workdir}/checkpoints/{failed} failed (No space left on device '
      '[errno 28]); training stopped; earlier checkpoints kept: '
      + ', '.join(map(str, kept))
  ], run.output[-4000:]
  # The partial step is removed, nothing temporary is left.
  assert sorted(os.listdir(workdir / 'checkpoints')) == sorted(
      [*map(str, kept), 'model.json']
  )
  assert not glob.glob(f'{workdir}/**/*.tmp', recursive=True)
  remount(disk, 'size=64m')
  _completed(workdir)
  _assert_identical(workdir, reference)
  assert _logged_steps(workdir) == list(range(1, STEPS + 1))
