"""Stop signals on real processes: a stop, a second stop by another signal,
the launcher passing them on, and a SLURM batch job requeued by its own
stop; each resumed run ends bit for bit where an uninterrupted one does.

Split from test_faults.py (whose helpers and shared reference run it uses)
so that the two files run on two test workers side by side."""

import os
import re
import shlex
import signal
import subprocess
import sys
import time

from conftest import REPO
import pytest
from test_faults import (
    STEP_LINE,
    STEPS,
    Run,
    _args,
    _assert_identical,
    _completed,
    _logged_steps,
    _main,
    _sigterm_at_step_line,
    shared_reference,
)

from adanet_jax.tools import launch
from adanet_jax.train import rundir

# The steps of the 2-process job: five runs of it, each at least three steps
# past the last (its compiled step is shared with test_slurm.py's srun job).
LAUNCHER_STEPS = 16


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  return shared_reference(tmp_path_factory)


@pytest.mark.timeout(600)
def test_sigterm_then_sigusr1_save_the_step_and_the_rerun_resumes_there(
    reference, tmp_path
):
  workdir = tmp_path / 'w'
  run = _main(workdir)
  stopped = _sigterm_at_step_line(run, run.proc.pid)
  assert 3 <= stopped < STEPS
  assert str(stopped) in os.listdir(workdir / 'checkpoints')
  assert run.lines[-1].startswith('error: stopped by SIGTERM at step')
  # released on the way out
  assert not os.path.exists(workdir / rundir.LOCK_FILE)
  # SLURM's `--signal=USR1@120` (SIGUSR1 killed the run at once, unsaved).
  run = _main(workdir)
  stopped_again = _sigterm_at_step_line(
      run, run.proc.pid, signum=signal.SIGUSR1
  )
  assert stopped + 3 <= stopped_again < STEPS
  assert run.lines[-1].startswith(
      f'error: stopped by SIGUSR1 at step {stopped_again} of {STEPS}'
  )
  assert [int(s) for s in STEP_LINE.findall(run.output)] == list(
      range(stopped + 1, stopped_again + 1)
  )
  rerun = _completed(workdir)
  redone = [int(s) for s in STEP_LINE.findall(rerun.output)]
  # no step done twice
  assert redone == list(range(stopped_again + 1, STEPS + 1))
  _assert_identical(workdir, reference)
  assert _logged_steps(workdir) == list(range(1, STEPS + 1))


@pytest.mark.timeout(900)
def test_sigterm_on_one_of_two_processes_or_the_launcher_stops_both_at_one_step(
    tmp_path,
):
  steps = LAUNCHER_STEPS
  shorter = {'train.num_epochs': steps * 32 / 1437}
  launcher = [
      sys.executable,
      '-m',
      'adanet_jax.tools.launch',
      '--processes=2',
      '--devices_per_process=2',
      '--timeout=500',
      '--',
  ]
  workdir = tmp_path / 'w'
  command = [*launcher, *_args(workdir, **shorter)]
  run = Run(command, env=dict(os.environ))
  pid_line = run.wait_for(lambda l: l.startswith('launch: process 1 pid'))
  worker = int(pid_line.split()[4])
  stopped = [
      _sigterm_at_step_line(run, worker, line_prefix='[0] ', steps=steps)
  ]
  assert 3 <= stopped[0] < steps
  assert str(stopped[0]) in os.listdir(workdir / 'checkpoints')
  # SIGTERM, then Ctrl-C (SIGINT: a terminal sends it to the launcher's
  # process group, the workers have their own), to the launcher: it passes
  # each on to both processes (SIGKILLed them before, unsaved; Ctrl-C was a
  # KeyboardInterrupt traceback and exit -2) and ends with one line.
  for signum in (signal.SIGTERM, signal.SIGINT):
    run = Run(command, env=dict(os.environ))
    run.wait_for(lambda l: l.startswith('launch: process 1 pid'))
    stopped.append(
        _sigterm_at_step_line(
            run, run.proc.pid, line_prefix='[0] ', steps=steps, signum=signum
        )
    )
    assert stopped[-2] + 3 <= stopped[-1] < steps
    name = signal.Signals(signum).name
    # SIGTERM goes to JAX's own handler, which does not tell the signal.
    by = {
        'SIGTERM': 'a preemption notice (SIGTERM, or a stop signal on another '
        'process)',
        'SIGINT': 'SIGINT',
    }[name]
    for i in (0, 1):
      assert (
          f'[{i}] error: stopped by {by} at step {stopped[-1]} of {steps}'
          in run.output
      ), run.output[-3000:]
    assert run.lines[-1] == (
        f'error: stopped by {name}: passed on to the 2 processes, which saved '
        'a checkpoint (lines above); run the same command again to resume '
        'from there'
    )
  rerun = Run(command, env=dict(os.environ))
  assert rerun.finish() == 0, rerun.output[-4000:]
  redone = [int(s) for s in STEP_LINE.findall(rerun.output)]
  assert redone == list(range(stopped[-1] + 1, steps + 1))
  assert _logged_steps(workdir) == list(range(1, steps + 1))
  reference_2x2 = tmp_path / 'reference_2x2'
  uninterrupted = Run(
      [*launcher, *_args(reference_2x2, **shorter)], env=dict(os.environ)
  )
  assert uninterrupted.finish() == 0, uninterrupted.output[-4000:]
  _assert_identical(workdir, reference_2x2, steps)


def _wait_for_file_line(path, predicate, timeout=300.0) -> str:
  """The first line of the file at `path` for which `predicate` holds, read
  as the file grows."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if os.path.exists(path):
      with open(path, errors='replace') as f:
        found = [l for l in f.read().splitlines() if predicate(l)]
      if found:
        return found[0]
    time.sleep(0.2)
  raise AssertionError(f'timed out waiting in {path}')


def _job_fields(job: str, env) -> dict:
  out = subprocess.run(
      ['scontrol', 'show', 'job', '-o', job],
      capture_output=True,
      text=True,
      env=env,
      check=False,
  )
  return dict(t.split('=', 1) for t in out.stdout.split() if '=' in t)


@pytest.mark.timeout(600)
def test_slurm_batch_job_stopped_by_its_signal_is_requeued_and_finishes(
    reference, slurm_cluster, tmp_path
):
  # The README's batch script. `scancel --signal=USR1 --batch` sends what
  # `#SBATCH --signal=B:USR1@120` sends 120 s before the time limit (SLURM's
  # smallest limit is a minute), to the batch shell, which `exec` made the run.
  workdir, log = tmp_path / 'w', tmp_path / 'job.out'
  script = tmp_path / 'train.sbatch'
  script.write_text(
      '#!/bin/bash\n'
      '#SBATCH --time=10\n'
      '#SBATCH --signal=B:USR1@120\n'
      '#SBATCH --requeue\n'
      '#SBATCH --open-mode=append\n'
      f'#SBATCH --output={log}\n'
      f'cd {REPO}\n'
      f'exec {sys.executable} -m adanet_jax.main '
      + ' '.join(shlex.quote(a) for a in _args(workdir))
      + '\n'
  )
  env = launch.cpu_devices_env(slurm_cluster, 4)
  job = subprocess.run(
      ['sbatch', '--parsable', str(script)],
      env=env,
      capture_output=True,
      text=True,
      check=True,
  ).stdout.strip()
  _wait_for_file_line(log, lambda l: re.search(r'step +3/', l))
  subprocess.run(
      ['scancel', '--signal=USR1', '--batch', job], env=env, check=True
  )
  stop = _wait_for_file_line(log, lambda l: l.startswith('error: stopped by'))
  match = re.fullmatch(
      rf'error: stopped by SIGUSR1 at step (\d+) of {STEPS}; saved a '
      r'checkpoint of step \1; run the same command again to resume from '
      rf'there; requeued SLURM job {job}, which runs the same command again',
      stop,
  )
  assert match, stop
  stopped = int(match.group(1))
  deadline = time.monotonic() + 400
  while _job_fields(job, env).get('JobState') != 'COMPLETED':
    assert time.monotonic() < deadline, log.read_text()[-4000:]
    time.sleep(1)
  fields = _job_fields(job, env)
  assert (fields['Restarts'], fields['ExitCode']) == ('1', '0:0')
  output = log.read_text()
  assert 'Traceback' not in output
  steps = [int(s) for s in STEP_LINE.findall(output)]
  assert steps[steps.index(stopped) + 1 :] == list(
      range(stopped + 1, STEPS + 1)
  )
