"""Requeueing the SLURM batch job of a run that stopped to be resumed.

SLURM does not requeue a batch job that exits with a non-zero status unless
the cluster's slurm.conf lists it in `RequeueExit`, which few clusters do. So
an entry point that exits with status 75 (stopped by a stop signal, saved,
"try again") inside a SLURM batch job requeues the job itself with
`scontrol requeue $SLURM_JOB_ID`: the job goes back to the queue under the
same id, runs its script again, and the run resumes from its checkpoint.

Only the first task asks (`SLURM_PROCID` 0), and only for a batch job that
is still running and may be requeued (not submitted with `--no-requeue`): a
job cancelled by `scancel` or already past its time limit has ended on
purpose, and an interactive `srun` has a person at its terminal.
"""

import os
import shutil
import subprocess


def requeue_slurm_job(environ=None) -> str:
  """Requeues this process's SLURM batch job, where it should be (above).

  The requeue ends the job's processes with SIGTERM: the caller is exiting
  and ignores the stop signals first.

  Args:
    environ: the environment to read SLURM's variables from (default
      os.environ).

  Returns:
    What to add to the stop message: '' outside a SLURM batch job, else
    '; requeued SLURM job N ...' or '; SLURM job N not requeued: <why>'.
  """
  environ = os.environ if environ is None else environ
  job = environ.get('SLURM_JOB_ID')
  if not job or environ.get('SLURM_PROCID', '0') != '0':
    return ''
  if shutil.which('scontrol') is None:
    return f'; SLURM job {job} not requeued: scontrol is not on PATH'
  fields = _job_fields(job)
  if fields.get('BatchFlag') != '1':
    return ''  # an interactive job: its user reruns the command
  if fields.get('Requeue') != '1':
    return f'; SLURM job {job} not requeued: it was submitted with --no-requeue'
  if fields.get('JobState') != 'RUNNING':
    return (
        f'; SLURM job {job} not requeued: it is {fields.get("JobState")} '
        '(cancelled, or past its time limit: give it --signal, README)'
    )
  out = subprocess.run(
      ['scontrol', 'requeue', job], capture_output=True, text=True, check=False
  )
  if out.returncode != 0:
    why = (out.stderr.strip().splitlines() or [f'status {out.returncode}'])[-1]
    return f'; SLURM job {job} not requeued: scontrol requeue: {why}'
  return f'; requeued SLURM job {job}, which runs the same command again'


def _job_fields(job: str) -> dict:
  """{field: value} of `scontrol show job -o JOB` ({} if it fails)."""
  out = subprocess.run(
      ['scontrol', 'show', 'job', '-o', job],
      capture_output=True,
      text=True,
      check=False,
  )
  return dict(
      token.split('=', 1) for token in out.stdout.split() if '=' in token
  )
