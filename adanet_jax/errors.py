"""The errors a user can cause, each reported by the entry points as one line.

Library code raises these and never prints or exits; `adanet_jax.runtime.cli` turns
any `ExpectedError` into one line on stderr and a non-zero exit. Anything
else is a bug and keeps its traceback.
"""

import contextlib
import os
import re


class ExpectedError(Exception):
  """A failure the user can act on; its message says what to do."""

  exit_code = 2


class ConfigError(ExpectedError, ValueError):
  """A bad config value, argument or path; the message names the field and
  what is allowed."""


class NonFiniteLossError(ExpectedError, RuntimeError):
  """The loss became NaN or infinite; training stopped, no batch skipped."""

  exit_code = 1


class CheckpointWriteError(ExpectedError):
  """A checkpoint could not be written (a full disk, a read-only path);
  training stopped, the earlier checkpoints are intact."""

  exit_code = 1


class WorkdirWriteError(ExpectedError):
  """A file other than a checkpoint (config.json, metrics.jsonl, TensorBoard
  events, an evaluation CSV, a sweep's files, an export) could not be
  written (a full disk, a read-only or immutable directory); nothing half
  written is left, the checkpoints are intact."""

  exit_code = 1


class WorkdirGoneError(ExpectedError):
  """The workdir of a live run was deleted (or its lock file removed or
  replaced); training stopped rather than write into nowhere."""

  exit_code = 1


class DataError(ConfigError):
  """A file of a dataset that cannot be used (a corrupt or odd image, an
  empty class folder); the message names the file or folder."""


class PeerProcessError(ExpectedError):
  """Another process of a multi-process job died (killed, out of memory,
  its node lost) and this one cannot go on alone; rerunning every process
  resumes from the last checkpoint. Its entry point exits at once, without
  JAX's distributed shutdown, which would wait for the dead process."""

  exit_code = 1


class DamagedCheckpointError(ConfigError):
  """No checkpoint step of a directory restores."""


class WorkdirInUseError(ConfigError):
  """Another live run holds the workdir; the message names it."""


class Preempted(ExpectedError):
  """Training stopped on SIGTERM/SIGINT after saving a checkpoint of the step
  it reached; rerunning the same command resumes there."""

  exit_code = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, run again


# TensorStore (under orbax) reports an OS error as a ValueError whose text
# ends "... No space left on device [os_error_code='28']".
_TENSORSTORE_ERRNO = re.compile(r"\[os_error_code='?(\d+)'?\]")


def os_error_text(error: BaseException) -> str | None:
  """'strerror [errno N]' of the OS error in `error` or its causes (libraries
  wrap them variously: an OSError, or TensorStore's text); None if there is
  none."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.strerror:
      return f'{seen.strerror} [errno {seen.errno}]'
    found = _TENSORSTORE_ERRNO.search(str(seen))
    if found:
      code = int(found.group(1))
      return f'{os.strerror(code)} [errno {code}]'
    seen = seen.__cause__ or seen.__context__
  return None


@contextlib.contextmanager
def reported_write(what: str, consequence: str):
  """An OSError inside (a full disk) becomes the one-line WorkdirWriteError
  'writing <what> failed (<OS error>); <consequence>'."""
  try:
    yield
  except OSError as e:
    raise WorkdirWriteError(
        f'writing {what} failed ({os_error_text(e) or e}); ' f'{consequence}'
    ) from None
