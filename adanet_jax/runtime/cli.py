"""What every command-line entry point shares: its own flags, defined only
when it runs, `--config.a.b=value` overrides, and one place that turns an
expected failure into one line.

An entry point module defines `define_flags()` (returning its flag holders)
and `main(args)`, and ends with

  if __name__ == '__main__':
    cli.run(main, define_flags)

Importing an entry point module defines no flag, so any number of them can be
imported into one process (a notebook, the tests).

A stop signal (`adanet_jax.train.preemption`: SIGTERM, SIGINT, SIGUSR1,
SIGUSR2, SIGHUP) that arrives while an entry point runs outside training
ends it with one line and status 75, as a stopped training run does; an
entry point that exits with 75 inside a SLURM batch job requeues the job
(`adanet_jax.runtime.requeue`).
"""

import logging
import os
import sys
import types
from typing import Callable

from absl import app, flags

from adanet_jax import config_lib
from adanet_jax.errors import (
    ConfigError,
    ExpectedError,
    PeerProcessError,
    Preempted,
)
from adanet_jax.runtime import console, requeue
from adanet_jax.train import preemption


def fail(message: str, exit_code: int = 2, at_once: bool = False):
  """Ends the process with `error: <message>` on stderr, no traceback; with
  status 75 (stopped, "try again") it first requeues a SLURM batch job.

  `at_once` skips the exit handlers: after a peer process died, JAX's
  distributed shutdown would wait at its barrier for the dead process until
  the heartbeat timeout, then abort the process ("Fatal Python error").
  """
  if exit_code == Preempted.exit_code:
    # On the way out: a second signal, or the requeue's SIGTERM, changes nothing.
    preemption.ignore_stop_signals()
    message += requeue.requeue_slurm_job()
  print(f'error: {message}', file=sys.stderr, flush=True)
  if at_once:
    sys.stdout.flush()
    logging.shutdown()  # flushes the log handlers that os._exit would drop
    os._exit(exit_code)  # pylint: disable=protected-access
  sys.exit(exit_code)


def run(
    main: Callable[[types.SimpleNamespace], int | None],
    define_flags: Callable[[], dict],
    overrides: bool = True,
    passthrough: bool = False,
    stopped: str = '',
) -> None:
  """Defines the entry point's flags, parses the command line and runs `main`.

  Args:
    main: called with a namespace of the flag values (by flag name), plus
      `overrides` ({'a.b': 'value'} from `--config.a.b=value`, if accepted) and
      `rest` (arguments after `--`, if `passthrough`).
    define_flags: defines the flags (absl DEFINE_*) and returns
      {name: FlagHolder}.
    overrides: whether `--config.a.b=value` arguments are accepted.
    passthrough: whether arguments after `--` are accepted (and passed on
      untouched in `rest`).
    stopped: what follows `stopped by <signal>` in the line of a stop signal
      outside training.
  """
  # Before anything loads TensorFlow or gRPC, which read these once.
  console.quiet_native_logs()
  console.quiet_abandoned_async_errors()
  holders = define_flags()
  parsed = {}

  def parse(argv):
    try:
      head, rest = _split_passthrough(argv) if passthrough else (argv, [])
      head, found = (
          config_lib.split_overrides(head) if overrides else (head, {})
      )
      positional = flags.FLAGS(head)[1:]
    except flags.Error as e:
      fail(str(e))
    except ExpectedError as e:
      fail(str(e), e.exit_code)
    if positional:
      fail(f'unexpected arguments: {" ".join(positional)}')
    parsed.update(overrides=found, rest=rest)
    return argv[:1]

  def guarded(argv):
    del argv
    args = types.SimpleNamespace(
        **{name: h.value for name, h in holders.items()}, **parsed
    )
    try:
      return main(args)
    except ExpectedError as e:
      fail(str(e), e.exit_code, at_once=isinstance(e, PeerProcessError))
    except BrokenPipeError:
      # The reader of a pipe stopped early (`... | head`): not a failure.
      # Python's own recipe: stdout to devnull, so the exit's flush is quiet.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
      sys.exit(1)

  with preemption.stopping_at_once():
    try:
      app.run(guarded, flags_parser=parse)
    except KeyboardInterrupt as e:  # StopSignal, or Ctrl-C
      name = getattr(e, 'signal_name', 'SIGINT')
      fail(f'stopped by {name}{stopped}', Preempted.exit_code)


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
  if '--' in argv:
    i = argv.index('--')
    return argv[:i], argv[i + 1 :]
  return argv, []


def require(args: types.SimpleNamespace, *names: str) -> None:
  """Refuses a run whose required flags are missing, naming them."""
  missing = [f'--{n}' for n in names if getattr(args, n) in (None, '')]
  if missing:
    raise ConfigError(f'{", ".join(missing)} is required')
