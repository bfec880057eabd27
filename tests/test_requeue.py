"""`runtime.requeue`: a run stopped with status 75 inside a SLURM batch job
requeues it with `scontrol requeue`, only from the first task, only a running
batch job that may be requeued; elsewhere it says why not or nothing. A fake
`scontrol` on PATH answers and records the calls (the real cluster: see
tests/test_faults.py)."""

import os

import pytest

from adanet_jax.runtime import requeue

FAKE_SCONTROL = """#!/bin/sh
echo "$@" >> "{log}"
if [ "$1" = show ]; then echo "JobId=42 JobName=x {fields} Reboot=0"; fi
if [ "$1" = requeue ] && [ -n "{refuse}" ]; then echo "{refuse}" >&2; exit 1; fi
"""
RUNNING = 'JobState=RUNNING Requeue=1 Restarts=0 BatchFlag=1'


@pytest.fixture
def scontrol(tmp_path):
  """Installs a fake scontrol answering with `fields`; returns (environment,
  path of its call log)."""

  def install(fields=RUNNING, refuse=''):
    log = tmp_path / 'calls.txt'
    path = tmp_path / 'scontrol'
    path.write_text(FAKE_SCONTROL.format(log=log, fields=fields, refuse=refuse))
    path.chmod(0o755)
    env = {
        'PATH': f'{tmp_path}:{os.environ["PATH"]}',
        'SLURM_JOB_ID': '42',
        'SLURM_PROCID': '0',
    }
    return env, log

  return install


def _calls(log) -> list[str]:
  return log.read_text().splitlines() if log.exists() else []


def test_a_running_batch_job_is_requeued(scontrol, monkeypatch):
  env, log = scontrol()
  monkeypatch.setenv('PATH', env['PATH'])
  assert (
      requeue.requeue_slurm_job(env)
      == '; requeued SLURM job 42, which runs the same command again'
  )
  assert _calls(log) == ['show job -o 42', 'requeue 42']


@pytest.mark.parametrize(
    'fields,refuse,said',
    [
        (
            'JobState=RUNNING Requeue=0 BatchFlag=1',
            '',
            '; SLURM job 42 not requeued: it was submitted with --no-requeue',
        ),
        (
            'JobState=CANCELLED Requeue=1 BatchFlag=1',
            '',
            '; SLURM job 42 not requeued: it is CANCELLED (cancelled, or past '
            'its time limit: give it --signal, README)',
        ),
        (
            RUNNING,
            'scontrol: error: Only batch jobs are accepted or processed',
            '; SLURM job 42 not requeued: scontrol requeue: scontrol: error: '
            'Only batch jobs are accepted or processed',
        ),
        ('JobState=RUNNING Requeue=1 BatchFlag=0', '', ''),  # interactive
    ],
)
def test_a_job_that_should_not_or_cannot_be_requeued_says_why(
    scontrol, monkeypatch, fields, refuse, said
):
  env, log = scontrol(fields, refuse)
  monkeypatch.setenv('PATH', env['PATH'])
  assert requeue.requeue_slurm_job(env) == said
  assert _calls(log)[-1] == ('requeue 42' if refuse else 'show job -o 42')


def test_only_the_first_task_of_a_slurm_job_asks(scontrol, monkeypatch):
  env, log = scontrol()
  monkeypatch.setenv('PATH', env['PATH'])
  assert requeue.requeue_slurm_job({**env, 'SLURM_PROCID': '1'}) == ''
  assert requeue.requeue_slurm_job({'PATH': env['PATH']}) == ''
  assert _calls(log) == []
