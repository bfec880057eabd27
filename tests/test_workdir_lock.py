"""`workdir_lock`: one holder at a time, released at exit, a dead holder's
lock taken over, refusals that change nothing, a lost lock file noticed."""

import json
import os
import socket

import pytest

from adanet_jax import errors
from adanet_jax.errors import ConfigError
from adanet_jax.train import rundir, workdir_lock


def test_one_holder_at_a_time(tmp_path):
  workdir = str(tmp_path / 'w')
  with workdir_lock.acquire(workdir) as lock:
    owner = json.loads(open(lock.path).read())
    assert (owner['host'], owner['pid']) == (socket.gethostname(), os.getpid())
    with pytest.raises(
        errors.WorkdirInUseError,
        match=rf'^workdir {workdir} is in use by another run \(host '
        rf'{socket.gethostname()}, pid {os.getpid()}, started .*\); wait '
        'for it to end, or use another workdir$',
    ):
      workdir_lock.acquire(workdir)
  assert os.listdir(workdir) == []  # released: the file is gone
  workdir_lock.acquire(workdir).release()


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
  # A SIGKILLed run leaves its file but no flock on it.
  (tmp_path / rundir.LOCK_FILE).write_text(
      json.dumps(
          {'host': socket.gethostname(), 'pid': 999999, 'start': 'earlier'}
      )
  )
  with workdir_lock.acquire(str(tmp_path)) as lock:
    assert json.loads(open(lock.path).read())['pid'] == os.getpid()


def test_workdir_that_is_a_file_is_refused(tmp_path):
  (tmp_path / 'f').write_text('x')
  with pytest.raises(
      ConfigError, match=r'^cannot create workdir .*/f: File exists$'
  ):
    workdir_lock.acquire(str(tmp_path / 'f'))
  assert (tmp_path / 'f').read_text() == 'x'


def test_held_until_the_file_is_removed_or_replaced(tmp_path):
  workdir = tmp_path / 'w'
  lock = workdir_lock.acquire(str(workdir))
  assert lock.held()
  os.remove(lock.path)  # as a deleted workdir takes it along
  assert not lock.held()
  lock.release()
  # Another run's file at the same path is never ours to remove.
  with workdir_lock.acquire(str(workdir)) as lock:
    os.rename(lock.path, str(tmp_path / 'moved'))
    (workdir / rundir.LOCK_FILE).write_text('{"pid": 1}')
    assert not lock.held()
  assert (workdir / rundir.LOCK_FILE).read_text() == '{"pid": 1}'
