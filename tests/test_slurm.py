"""Training and sweeps on a real SLURM cluster (the `slurm_cluster` fixture:
slurmctld and slurmd on localhost): `srun -n 2 python -m adanet_jax.main`
forms one jax.distributed job from SLURM's environment and ends with the
parameters of one process with two devices, and when one task is killed the
other ends with one line; a sweep submitted through submitit
(`--launcher=slurm`) finishes, resumes without resubmitting finished points,
submits a point stopped by its time limit's signal again until it finishes
with the parameters of an uninterrupted run, and summarises.
"""

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

# The tiny digits job (4 steps) of the multi-process tests and their check
# that two runs end in the same state; the tiny 3-point sweep of the sweep tests.
# pylint: disable=wrong-import-order
from conftest import restore_state
import jax
import numpy as np
import pytest
from test_faults import STEP_LINE, Run, _args
from test_multihost import _assert_same_state, _config, _main_args
from test_signals import LAUNCHER_STEPS
from test_sweep import TINY as SWEEP

from adanet_jax import config_lib
from adanet_jax.tools import launch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POINTS = ['target-0.3_seed-0', 'target-0.5_seed-0', 'target-0.7_seed-0']


@pytest.mark.timeout(600)
def test_srun_two_tasks_equal_one_process_with_two_devices(
    slurm_cluster, load_config, tmp_path
):
  reference = tmp_path / 'one_process'
  out = subprocess.run(
      [sys.executable, '-m', 'adanet_jax.main', *_main_args(reference)],
      cwd=REPO,
      env=launch.cpu_devices_env(os.environ, 2),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

  workdir = tmp_path / 'srun'
  env = launch.cpu_devices_env(slurm_cluster, 1)  # each task: one CPU device
  out = subprocess.run(
      [
          'srun',
          '-n',
          '2',
          '--cpus-per-task=1',
          '--time=10',
          '--kill-on-bad-exit=1',
          sys.executable,
          '-m',
          'adanet_jax.main',
          *_main_args(workdir),
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=500,
  )
  log = out.stdout + out.stderr
  assert out.returncode == 0, log[-5000:]
  assert (
      'JAX 0.10.2 on 2 cpu device(s), 2 process(es) (cluster environment detected by JAX)'
      in log
  )
  assert '[Gloo]' not in log
  _assert_same_state(_config(load_config), workdir, reference)


def _task_pid(workdir, task: int) -> int:
  """The pid of the training process of SLURM task `task` of the job that
  trains in `workdir` (the only one with that path on its command line)."""
  for entry in os.listdir('/proc'):
    try:
      with open(f'/proc/{entry}/cmdline', 'rb') as f:
        argv = f.read().split(b'\0')
      with open(f'/proc/{entry}/environ', 'rb') as f:
        environ = f.read().split(b'\0')
    except OSError:  # not a process, or one that ended
      continue
    if (
        b'adanet_jax.main' in argv
        and f'--workdir={workdir}'.encode() in argv
        and f'SLURM_PROCID={task}'.encode() in environ
    ):
      return int(entry)
  raise AssertionError(f'no process of task {task} trains in {workdir}')


@pytest.mark.timeout(300)
def test_srun_without_kill_on_bad_exit_a_killed_task_ends_the_other_in_one_line(
    slurm_cluster, tmp_path
):
  # Without --kill-on-bad-exit SLURM leaves the other task running: it hung
  # at JAX's shutdown barrier until the heartbeat timeout (80-100 s), then
  # aborted ("Fatal Python error: Aborted", exit 134). Now its next step's
  # collective fails, and it ends with one line. One CPU device per task: the
  # survivor's only gloo peer is then the dead process, so it always sees
  # the broken connection (with two, the step's collective sometimes never
  # returns: experiments/results/peer_death.txt). No checkpoint before the
  # end: the survivor's next wait is a step's collective, not a checkpoint's
  # barrier, which only the heartbeat timeout ends.
  workdir = tmp_path / 'w'
  run = Run(
      [
          'srun',
          '-n',
          '2',
          '--cpus-per-task=1',
          '--time=10',
          '--label',
          sys.executable,
          '-m',
          'adanet_jax.main',
          *_args(
              workdir,
              **{
                  'train.num_epochs': LAUNCHER_STEPS * 32 / 1437,
                  'checkpoint.every_steps': 100,
              },
          ),
      ],
      env=launch.cpu_devices_env(slurm_cluster, 1),
  )
  assert run.wait_for(lambda l: l.startswith('0: ') and STEP_LINE.search(l))
  os.kill(_task_pid(workdir, 1), signal.SIGKILL)
  code = run.finish(timeout=120)
  task0 = [l[3:] for l in run.lines if l.startswith('0: ')]
  # reset or closed: whether the survivor was reading or writing then
  assert re.fullmatch(
      r'error: process 0 of 2: another process of the job died \(all-reduce '
      r'failed: Connection (reset|closed) by peer\); this one stopped too; '
      'run the same command again for all processes to resume from the last '
      'checkpoint',
      task0[-1],
  ), run.output[-4000:]
  host = socket.gethostname().split('.')[0]
  assert sorted(
      l
      for l in run.lines
      if not l.startswith(('0: ', '1: ', 'srun: Force Terminated StepId='))
  ) == [
      f'srun: error: {host}: task 0: Exited with exit code 1',
      f'srun: error: {host}: task 1: Killed',
  ], run.output[
      -4000:
  ]
  assert code == 128 + signal.SIGKILL  # srun: the highest of its tasks'
  for text in ('Traceback', 'Fatal Python error', 'Check failure'):
    assert text not in run.output
  assert os.listdir(workdir / 'checkpoints') == ['model.json']


# The tiny sweep, two epochs (45 steps) logged at every step: a stop signal
# sent at a point's first step line arrives many steps before its end.
SWEEP_COMMON = {'train.num_epochs': 2.0, 'train.log_every_steps': 1}


def _sweep_command(root):
  return [
      sys.executable,
      '-m',
      'adanet_jax.tools.sweep',
      f'--root={root}',
      *(f for f in SWEEP if not f.startswith('--config.train.num_epochs=')),
      *(f'--config.{k}={v}' for k, v in SWEEP_COMMON.items()),
      '--launcher=slurm',
      # SIGUSR2 45 s before the limit (a quarter of it), at the earliest 60 s
      # before that: long after the points ended
      '--slurm.time=3',
      '--slurm.cpus_per_task=1',
  ]


def _sweep(root, env, on_step=None):
  """Runs the sweep to its end; `on_step(point)` is called once for each
  point whose log.txt shows a train step line (then, none is started)."""
  with open(root.parent / 'sweep_out.txt', 'w') as out:
    proc = subprocess.Popen(
        _sweep_command(root),
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen, logs = set(), {n: root / n / 'log.txt' for n in POINTS}
    before = {
        n: len(l.read_text()) if l.exists() else 0 for n, l in logs.items()
    }
    while proc.poll() is None and on_step is not None:
      for name in set(POINTS) - seen:
        if logs[name].exists() and STEP_LINE.search(
            logs[name].read_text()[before[name] :]
        ):
          seen.add(name)
          on_step(name)
      time.sleep(0.1)
    stderr = proc.communicate(timeout=500)[1]
  stdout = (root.parent / 'sweep_out.txt').read_text()
  assert proc.returncode == 0, stdout[-4000:] + stderr[-4000:]
  return subprocess.CompletedProcess(proc.args, 0, stdout, stderr)


def _slurm_jobs(root):
  # one folder per job
  return sorted(n for n in os.listdir(root / 'slurm') if n.isdigit())


def _started(stdout):
  """{point: SLURM job id} of the `started NAME (SLURM job ID)` lines."""
  found = re.findall(
      r'^started (\S+) \(SLURM job (\d+)\)$', stdout, re.MULTILINE
  )
  return dict(found)


@pytest.mark.timeout(900)
def test_sweep_through_slurm_finishes_resumes_and_summarises(
    slurm_cluster, tmp_path
):
  env = dict(slurm_cluster)
  env.pop('XLA_FLAGS', None)  # one device per point, as on a user's machine
  root = tmp_path / 'sweep'
  # The sweep dies (a closed login session) once its three jobs are submitted.
  with open(tmp_path / 'first.txt', 'w') as out:
    launcher = subprocess.Popen(
        _sweep_command(root),
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 200
    while (
        time.time() < deadline
        and launcher.poll() is None
        and len(_started((tmp_path / 'first.txt').read_text())) < 3
    ):
      time.sleep(0.2)
    launcher.kill()
    launcher.wait()
  submitted = _started((tmp_path / 'first.txt').read_text())
  assert sorted(submitted) == POINTS

  # The rerun follows the three jobs (queued, running or finished since): none
  # is submitted again.
  first = _sweep(root, env)
  assert _started(first.stdout) == submitted
  assert _slurm_jobs(root) == sorted(submitted.values())
  job = submitted[POINTS[0]]
  script = (root / 'slurm' / job / f'{job}_submission.sh').read_text()
  assert '#SBATCH --signal=USR2@45\n#SBATCH --time=3\n' in script
  for name in POINTS:
    assert (
        json.loads((root / name / 'sweep_status.json').read_text())['status']
        == 'done'
    )
  for path in ('summary.md', 'summary.csv', 'accuracy_vs_gflops.png'):
    assert f'wrote {root / path}' in first.stdout
  # no accounting here: submitit's sacct is not used
  assert 'sacct' not in first.stderr

  # A point whose status and checkpoints were lost trains again from step 0
  # (the finished ones are not resubmitted). SIGUSR2 to its job at its first
  # step, what submitit's --signal=USR2@LEAD sends at the time limit, stops
  # it after saving (exit 75); the sweep submits it again, and it resumes and
  # ends as its uninterrupted first run did, bit for bit.
  (root / POINTS[1] / 'sweep_status.json').unlink()
  os.mkdir(tmp_path / 'ref')
  os.rename(root / POINTS[1] / 'checkpoints', tmp_path / 'ref' / 'checkpoints')
  logs = {n: (root / n / 'log.txt').read_text() for n in POINTS}
  jobs = []

  def stop(name):
    assert name == POINTS[1]
    jobs.extend(_started((tmp_path / 'sweep_out.txt').read_text()).values())
    subprocess.run(['scancel', '--signal=USR2', jobs[0]], env=env, check=True)

  second = _sweep(root, env, on_step=stop)
  assert '2 of 3 points already done' in second.stdout
  started = re.findall(
      r'^started (\S+) \(SLURM job (\d+)\)$', second.stdout, re.MULTILINE
  )
  assert [n for n, _ in started] == [POINTS[1], POINTS[1]]
  assert started[0][1] == jobs[0]
  saved = re.search(
      rf'^{POINTS[1]}: stopped by its time limit or a preemption after '
      r'saving step (\d+) \(exit 75\); submitting it again$',
      second.stdout,
      re.MULTILINE,
  )
  assert saved, second.stdout
  at = int(saved.group(1))
  assert len(_slurm_jobs(root)) == 5
  for name in (POINTS[0], POINTS[2]):
    assert (root / name / 'log.txt').read_text() == logs[name]
  resumed = (root / POINTS[1] / 'log.txt').read_text()[len(logs[POINTS[1]]) :]
  stopped, after = resumed.split(f'stopped by SIGUSR2 at step {at} of ')
  # the second job trained from the saved step on
  assert [int(n) for n in STEP_LINE.findall(after)][0] == at + 1, resumed
  assert [int(n) for n in STEP_LINE.findall(stopped)][-1] == at, resumed
  config = config_lib.load_config(
      os.path.join(REPO, SWEEP[0].split('=', 1)[1]),
      {
          **dict(f[len('--config.') :].split('=', 1) for f in SWEEP[2:]),
          **{k: str(v) for k, v in SWEEP_COMMON.items()},
          'loss.target': '0.5',
          'seed': '0',
      },
  )
  (step, state), (ref_step, ref) = (
      restore_state(config, w) for w in (root / POINTS[1], tmp_path / 'ref')
  )
  assert step == ref_step > at
  leaves = jax.tree.leaves(state), jax.tree.leaves(ref)
  assert len(leaves[0]) == len(leaves[1]) > 0
  for x, y in zip(*leaves):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  rows = list(csv.DictReader(open(root / 'summary.csv')))
  assert [r['point'] for r in rows] == POINTS
  assert [r['status'] for r in rows] == ['done'] * 3
  assert all(float(r['accuracy']) > 0 for r in rows)
