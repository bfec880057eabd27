"""The SLURM launcher of sweeps: one SLURM job per point, through `submitit`.

`adanet_jax.tools.sweep --launcher=slurm` hands each point's training command to
`SlurmLauncher.start`, which submits a one-task job (`sbatch` through
submitit) that runs the command on a compute node, its output appended to the
point's `log.txt` as with the local launcher. The sweep itself keeps the plan,
the resume (a finished point is never resubmitted), the retries and the
summary; this module only starts, watches and cancels jobs.

A point is one process (one task) with the accelerators SLURM gives it
(`--slurm.gpus_per_task`); a point spanning several tasks or nodes is run by
hand with `srun`/`sbatch` (README, "On a SLURM cluster"). Submitit's own
files (the submitted call, its stdout/stderr) go to `<root>/slurm/`. A job's
exit status comes back as JSON in the point's workdir (RESULT_FILE), so the
sweep never deserializes a file that others could have written.

A point's job gets SIGUSR2 `signal_lead_s` before its time limit
(`--slurm.time`; submitit's `--signal=USR2@LEAD`), SIGTERM when it is
preempted: the training process stops at the next step boundary, saves and
exits with status 75 (`errors.Preempted`), and the sweep submits the point
again (`resubmits_stopped`), which resumes from that checkpoint. The job's
own process passes the stop signals on to the training process instead of
letting submitit requeue or end the job meanwhile.
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time

from adanet_jax.errors import ConfigError, reported_write
from adanet_jax.train import preemption, rundir

# What the sweep writes to a point's log and reads back on failure.
LOG_FILE = 'log.txt'
# The point's current SLURM job, so that a rerun of the sweep whose launcher
# died (a closed login session) follows a job still queued or running instead
# of submitting a second one into the same workdir.
JOB_FILE = 'slurm_job.json'
# What a finished job writes, atomically: {'job_id', 'status'}.
RESULT_FILE = 'slurm_result.json'
# How often a job that has not written its result is looked up in `squeue`:
# without SLURM accounting (`sacct`) submitit cannot see a job that died
# before returning (cancelled, node failure, out of memory).
SQUEUE_EVERY_S = 15.0
# The return code of a point whose job vanished without a result.
LOST_JOB_STATUS = 255
# How long before its time limit a point's job is told to stop: enough to
# finish a step and save. SLURM may send it up to 60 s earlier than asked
# (its manual).
MAX_SIGNAL_LEAD_S = 90


def signal_lead_s(time_min: int) -> int:
  """Seconds before the time limit at which a point's job gets SIGUSR2:
  MAX_SIGNAL_LEAD_S, but at most a quarter of a short `--slurm.time`
  (submitit's default of 90 s is longer than a 1-minute job: SLURM signals
  it at its first look at the job's time, and every resubmission again)."""
  return min(MAX_SIGNAL_LEAD_S, time_min * 60 // 4)


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
  """What each point's job asks SLURM for (None: the cluster's default)."""

  partition: str | None = None
  time_min: int = 240
  gpus_per_task: int | None = None
  cpus_per_task: int | None = None
  mem: str | None = None


def run_point(command: list[str], workdir: str, cwd: str) -> int:
  """Runs one point's training command; this is what the SLURM job executes.

  Args:
    command: the point's `python -m adanet_jax.main ...` command line.
    workdir: the point's workdir; output is appended to its log.txt.
    cwd: the directory the sweep was started in (relative config paths).

  Returns:
    The command's exit status.
  """
  # The job is one task: without SLURM's variables JAX does not treat the
  # point as a one-process SLURM job, which would also narrow its devices to
  # the accelerator of local rank 0 instead of all the job's GPUs.
  env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, LOG_FILE), 'a') as log:
    child = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
    )
    # Submitit's handlers would requeue the job or end it before the point
    # saved; SLURM signals every process of the job step, the point included,
    # and passing it on covers a signal sent to this process alone.
    previous = {
        signum: signal.signal(signum, lambda s, _: child.send_signal(s))
        for signum in (
            signal.Signals[n] for n in preemption.DEFAULT_STOP_SIGNALS
        )
    }
    try:
      status = child.wait()
    finally:
      for signum, handler in previous.items():
        signal.signal(signum, handler)
  os.makedirs(workdir, exist_ok=True)  # deleted while the point ran
  # Atomically: the sweep never reads half a result.
  rundir.write_json(
      os.path.join(workdir, RESULT_FILE),
      {'job_id': os.environ.get('SLURM_JOB_ID', ''), 'status': status},
  )
  return status


class SlurmJob:
  """One submitted point: polled by the sweep, cancelled on Ctrl-C.

  Args:
    job: the submitit job.
    job_file: the point's JOB_FILE, marked collected once the sweep has the
      job's exit status.
  """

  def __init__(self, job, job_file: str):
    self.job, self.job_file = job, job_file
    self.result_file = os.path.join(os.path.dirname(job_file), RESULT_FILE)
    self.next_squeue = time.monotonic() + SQUEUE_EVERY_S

  @property
  def job_id(self) -> str:
    return self.job.job_id

  def poll(self) -> int | None:
    """The point's exit status once its job ended, else None."""
    code = self._exit_status()
    if code is not None:
      _write_job_file(self.job_file, self.job_id, collected=True)
    return code

  def _exit_status(self) -> int | None:
    # The result file, written atomically when the job returns, is the
    # answer; submitit's own `done()` would also ask `sacct`, which clusters
    # without accounting refuse (and submitit then warns on every call).
    result = self._result()
    if result is not None:
      return int(result['status'])
    if time.monotonic() >= self.next_squeue:
      self.next_squeue = time.monotonic() + SQUEUE_EVERY_S
      if not self._in_queue() and not self._finished():
        return LOST_JOB_STATUS
    return None

  def _result(self) -> dict | None:
    """This job's RESULT_FILE, or None before it wrote one (an earlier
    job's result does not count)."""
    try:
      with open(self.result_file) as f:
        result = json.load(f)
    except (OSError, ValueError):
      return None
    return result if str(result.get('job_id')) == str(self.job_id) else None

  def _finished(self) -> bool:
    return self._result() is not None

  def _in_queue(self) -> bool:
    out = subprocess.run(
        ['squeue', '-h', '-j', str(self.job_id), '-o', '%T'],
        capture_output=True,
        text=True,
        check=False,
    )
    # squeue fails for an id it no longer knows; an unreachable controller
    # also fails: then assume the job is still there and ask again later.
    if out.returncode != 0:
      return 'Invalid job id' not in out.stderr
    return bool(out.stdout.strip())

  def stop(self) -> None:
    """Cancels the job (SLURM sends SIGTERM to the point, then SIGKILL).

    Its result, if it writes one while stopping, is not wanted: the next
    launch submits the point again (to resume from its checkpoint).
    """
    subprocess.run(
        ['scancel', str(self.job_id)], capture_output=True, check=False
    )
    _write_job_file(self.job_file, self.job_id, collected=True)


class SlurmLauncher:
  """Starts points as SLURM jobs (the interface of `sweep.LocalLauncher`)."""

  name = 'slurm'
  # A point that exits with status 75 was stopped by its time limit or a
  # preemption after saving: the sweep submits it again.
  resubmits_stopped = True

  def __init__(self, root: str, options: SlurmOptions):
    missing = [
        c for c in ('sbatch', 'squeue', 'scancel') if shutil.which(c) is None
    ]
    if missing:
      raise ConfigError(
          f"--launcher=slurm needs SLURM's commands; not found on PATH: "
          f'{", ".join(missing)}'
      )
    import submitit  # pylint: disable=import-outside-toplevel

    self.folder = os.path.join(root, 'slurm')
    self.options = options
    self.executor = submitit.SlurmExecutor(
        folder=os.path.join(self.folder, '%j')
    )
    params = {
        'time': options.time_min,
        'ntasks_per_node': 1,
        'nodes': 1,
        'signal_delay_s': signal_lead_s(options.time_min),
    }
    for key in ('partition', 'gpus_per_task', 'cpus_per_task', 'mem'):
      if getattr(options, key) is not None:
        params[key] = getattr(options, key)
    self.executor.update_parameters(**params)

  def start(self, name: str, command: list[str], workdir: str) -> SlurmJob:
    """Submits one point, or follows its job of an earlier launch while that
    is still in SLURM's queue.

    Args:
      name: the point's name (the SLURM job name).
      command: its training command.
      workdir: its workdir.

    Returns:
      The job.
    """
    import submitit  # pylint: disable=import-outside-toplevel

    path = os.path.join(workdir, JOB_FILE)
    if os.path.exists(path):
      with open(path) as f:
        recorded = json.load(f)
      earlier = SlurmJob(
          submitit.SlurmJob(
              folder=os.path.join(self.folder, '%j'), job_id=recorded['job_id']
          ),
          path,
      )
      # pylint: disable-next=protected-access
      if not recorded['collected'] and (
          earlier._finished() or earlier._in_queue()
      ):
        return earlier
    self.executor.update_parameters(job_name=name)
    try:
      job = self.executor.submit(run_point, command, workdir, os.getcwd())
    except submitit.core.utils.FailedJobError as e:
      # sbatch refused (no controller, a bad partition or time): its last line says why.
      reason = (
          str(e).strip().splitlines()[-1]
          if str(e).strip()
          else 'no reason given'
      )
      raise ConfigError(f'sbatch refused point {name}: {reason}') from None
    _write_job_file(path, job.job_id, collected=False)
    return SlurmJob(job, path)

  def describe(self, job: SlurmJob) -> str:
    return f'SLURM job {job.job_id}'


def _write_job_file(path: str, job_id: str, collected: bool) -> None:
  with reported_write(path, rundir.SWEEP_STOPPED):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rundir.write_json(path, {'job_id': job_id, 'collected': collected})
