"""One live run per workdir: the lock file `workdir/workdir.lock`.

The lock file holds the owner (host, pid, start time) as JSON; its mtime is
the owner's heartbeat, renewed every `HEARTBEAT_S` seconds by a daemon
thread. The owner also holds an exclusive `flock` on it, which the kernel
drops when the process dies however it dies (SIGKILL included). So a new run:
  - is refused (`WorkdirInUseError`, naming the owner) while the flock is
    held, or while a lock written on another host has a heartbeat younger
    than `STALE_S` (a flock may not reach across hosts on a network file
    system);
  - takes the lock over otherwise: the owner died (same host: the flock is
    free), or its heartbeat is stale.
In a multi-process job process 0 takes the lock for the whole job; the
others learn whether it succeeded and do not touch the file.

The owner can ask `held()` whether the file is still its own: a workdir
deleted under a live run takes the lock file with it. A sweep launcher
holds the same kind of lock on its root (`acquire_local`, no JAX).
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import threading
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from adanet_jax.errors import (
    ConfigError,
    WorkdirInUseError,
    WorkdirWriteError,
    os_error_text,
)
from adanet_jax.train import rundir

HEARTBEAT_S = 30.0
STALE_S = 600.0


class WorkdirLock:
  """The held lock of one workdir (process 0), or a stand-in elsewhere."""

  def __init__(self, path: str, fd: int | None):
    self.path = path
    self._fd = fd
    self._stop = threading.Event()
    if fd is not None:
      threading.Thread(
          target=self._beat, daemon=True, name='workdir-lock-heartbeat'
      ).start()

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      with contextlib.suppress(OSError):
        os.utime(self._fd)

  def held(self) -> bool:
    """Whether the lock file at `path` is still the one this lock holds:
    False once it was removed (its directory deleted) or replaced. Always
    True where this process holds no file (processes other than 0)."""
    if self._fd is None:
      return True
    try:
      return os.path.samestat(os.stat(self.path), os.fstat(self._fd))
    except OSError:
      return False

  def release(self) -> None:
    """Removes the lock file, if still its own, and drops the flock
    (idempotent)."""
    self._stop.set()
    if self._fd is not None:
      if self.held():  # never the file of a run that took the path since
        with contextlib.suppress(OSError):
          # before unlocking: a waiting run then sees a new file
          os.remove(self.path)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


def acquire(workdir: str) -> WorkdirLock:
  """Creates `workdir` if needed and takes its lock (module docstring).

  Args:
    workdir: the run's directory.

  Returns:
    The held lock; `release()` it (or use it as a context manager) at exit.

  Raises:
    WorkdirInUseError: another live run holds the workdir.
    ConfigError: the workdir cannot be created, or a file not created in it.
    WorkdirWriteError: the lock file could not be written (a full disk).
  """
  path = os.path.join(os.path.abspath(workdir), rundir.LOCK_FILE)
  fd, error = None, None
  if jax.process_index() == 0:
    try:
      fd = _take(path, 'workdir', 'run')
    except (ConfigError, WorkdirWriteError) as e:
      error = e
  if jax.process_count() > 1:
    ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if error is None and not ok:
      error = ConfigError(
          f'process 0 could not take the lock of workdir {workdir}'
      )
  if error is not None:
    raise error
  return WorkdirLock(path, fd)


def check_creatable(workdir: str) -> None:
  """Refuses, reading only, a workdir `acquire` could not create (a file, a
  path through a file, a folder without write permission), so that the run
  stops before it loads or builds anything.

  Raises:
    ConfigError: as `acquire` would.
  """
  path = os.path.abspath(workdir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if path == os.path.abspath(workdir):
    code = None if os.path.isdir(path) else errno.EEXIST
  elif not os.path.isdir(path):
    code = errno.ENOTDIR
  else:
    code = None if os.access(path, os.W_OK | os.X_OK) else errno.EACCES
  if code is not None:
    raise ConfigError(
        f'cannot create workdir {os.path.abspath(workdir)}: '
        f'{os.strerror(code)}'
    )


def acquire_local(
    directory: str, lock_file: str, what: str, holder: str
) -> WorkdirLock:
  """Takes the lock `directory/lock_file` of a one-process program (a sweep
  launcher on its root), as `acquire` does but without JAX.

  Args:
    directory: created if needed.
    lock_file: the lock file's name.
    what: the directory's name in messages, e.g. 'sweep root'.
    holder: its holder's, e.g. 'sweep' (a refusal then reads 'sweep root R
      is in use by another sweep (host, pid, start)').

  Returns:
    The held lock.

  Raises:
    WorkdirInUseError: another live holder has it.
    ConfigError: the directory cannot be created, or a file not created in
      it.
    WorkdirWriteError: the lock file could not be written (a full disk).
  """
  path = os.path.join(os.path.abspath(directory), lock_file)
  return WorkdirLock(path, _take(path, what, holder))


def _take(path: str, what: str, holder: str) -> int:
  """The fd of the taken lock file `path`; `what` names its directory and
  `holder` the kind of owner in messages."""
  workdir = os.path.dirname(path)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f'cannot create {what} {workdir}: {e.strerror}') from None
  if not os.path.isdir(workdir):
    raise ConfigError(f'{what} {workdir} is not a directory')
  while True:
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise ConfigError(
          f'cannot write to {what} {workdir}: {e.strerror}'
      ) from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = _read(fd)
      os.close(fd)
      raise WorkdirInUseError(
          f'{what} {workdir} is in use by {_describe(owner, holder)}; wait '
          f'for it to end, or use another {what}'
      ) from None
    # The previous owner may have removed the file between our open and our
    # flock: then we hold a lock on a file nobody else sees; try again.
    if not os.path.exists(path) or os.stat(path).st_ino != os.fstat(fd).st_ino:
      os.close(fd)
      continue
    owner, age = _read(fd), time.time() - os.fstat(fd).st_mtime
    if owner and owner.get('host') != socket.gethostname() and age < STALE_S:
      os.close(fd)
      raise WorkdirInUseError(
          f'{what} {workdir} is in use by {_describe(owner, holder)} '
          f'(heartbeat {age:.0f} s ago; taken over after {STALE_S:.0f} s); '
          f'wait for it to end, or use another {what}'
      )
    try:
      _write(
          fd,
          {
              'host': socket.gethostname(),
              'pid': os.getpid(),
              'start': datetime.datetime.now()
              .astimezone()
              .isoformat(timespec='seconds'),
          },
      )
    except OSError as e:  # e.g. a full disk: leave no empty lock file behind
      with contextlib.suppress(OSError):
        os.remove(path)
      os.close(fd)
      # A failed write, as every other file's (exit 1), not bad input: the
      # path was fine, the disk was not.
      raise WorkdirWriteError(
          f'writing {path} failed ({os_error_text(e)}); the {holder} did '
          'not start'
      ) from None
    return fd


def _read(fd: int) -> dict:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    return json.loads(os.read(fd, 4096).decode() or '{}')
  except (OSError, ValueError):
    return {}


def _write(fd: int, owner: dict) -> None:
  data = json.dumps(owner).encode()
  os.ftruncate(fd, 0)
  os.pwrite(fd, data, 0)
  os.fsync(fd)


def _describe(owner: dict, holder: str) -> str:
  if not owner:
    return f'another {holder}'
  return (
      f'another {holder} (host {owner.get("host")}, pid {owner.get("pid")}, '
      f'started {owner.get("start")})'
  )
