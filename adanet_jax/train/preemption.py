"""Stopping a run cleanly on a stop signal (a preemption notice, a time
limit, Ctrl-C, a closed SSH session).

Schedulers ask a job to end with a signal some time before they kill it:
SIGTERM (SLURM, Kubernetes, Cloud TPU), SIGUSR1/SIGUSR2 (SLURM's
`--signal=USR1@120`, submitit), SIGHUP (a closed terminal or SSH session),
SIGINT (Ctrl-C). These are the stop signals, `train.stop_signals` (default
DEFAULT_STOP_SIGNALS). While `StopRequest` is active they only record the
request; the trainer asks `should_stop(step)` at every step boundary, saves a
checkpoint of that step and raises `Preempted`, which entry points turn into
one line and exit status 75 (`errors.Preempted`, EX_TEMPFAIL: "try again"),
so a scheduler requeues the job and the same command resumes at that step.

Outside training (start-up, imports) `stopping_at_once` makes them raise
`StopSignal`, a KeyboardInterrupt: the entry point ends at once with one line
(`adanet_jax.runtime.cli`), as there is nothing to save yet.

SIGQUIT is not a default: it is the signal that asks for a core dump to debug a
hung process, and keeps that meaning unless named in `train.stop_signals`.
A signal that is ignored when a run starts (`nohup` ignores SIGHUP, a
background job of a script ignores SIGINT) stays ignored.

One process: Python signal handlers set a flag.

Several processes (`jax.distributed`): every process must stop at the same
step, or one would save a step the others never reach. JAX's preemption
service does that: `jax.distributed.initialize` installs its own SIGTERM
handler on every process, a notice on any process reaches all of them, and
`multihost_utils.reached_preemption_sync_point(step)`, asked at every step,
turns True on all processes at the same step. The other stop signals are passed
on to that handler as SIGTERM, so Ctrl-C or SIGUSR1 on one process stops the
whole job alike. JAX starts the service in `initialize` when its public config
`jax_enable_preemption_service` is on (the default); with it off, the
processes agree through a tiny allgather of their flags at every step.

A second signal while the checkpoint is written changes nothing: the request
is already recorded and the save runs to its end.

JAX is imported where it is used, not at the top: entry points install the
start-up handlers before JAX loads (about a second of imports).
"""

import contextlib
import os
import signal
import threading
from typing import Iterable

from adanet_jax import config_lib
from adanet_jax.errors import ConfigError

DEFAULT_STOP_SIGNALS = config_lib.DEFAULT_STOP_SIGNALS
# What `train.stop_signals` may name: the signals that ask a process to end.
ALLOWED_STOP_SIGNALS = DEFAULT_STOP_SIGNALS + ('SIGQUIT', 'SIGXCPU')


def check_stop_signals(names) -> tuple[str, ...]:
  """Refuses a `train.stop_signals` value that names no stop signal.

  Returns:
    The names, as a tuple.

  Raises:
    ConfigError naming the field, the bad name and the allowed ones.
  """
  if isinstance(names, str) or not isinstance(names, Iterable):
    names = (names,)
  for name in names:
    if name not in ALLOWED_STOP_SIGNALS:
      raise ConfigError(
          f'train.stop_signals={tuple(names)!r}: {name!r} is not a stop '
          f'signal; allowed: {", ".join(ALLOWED_STOP_SIGNALS)}'
      )
  return tuple(names)


def _numbers(names: Iterable[str]) -> list[int]:
  return [signal.Signals[n].value for n in dict.fromkeys(names)]


def _usual_handler(signum: int):
  """The handler a signal has in a fresh Python process."""
  return (
      signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
  )


class StopSignal(KeyboardInterrupt):
  """A stop signal arrived outside training; ends the process as Ctrl-C does
  (code that cleans up after Ctrl-C does so for every stop signal)."""

  def __init__(self, signal_name: str):
    super().__init__(signal_name)
    self.signal_name = signal_name


def _raise_stop_signal(signum, frame):
  del frame
  raise StopSignal(signal.Signals(signum).name)


@contextlib.contextmanager
def stopping_at_once(names: Iterable[str] = DEFAULT_STOP_SIGNALS):
  """While active, each stop signal raises `StopSignal` in the main thread.

  Signals ignored on entry stay ignored; the handlers before come back on exit.
  Outside the main thread (where handlers cannot be set) nothing changes.
  """
  previous = {}
  if threading.current_thread() is threading.main_thread():
    for signum in _numbers(names):
      if signal.getsignal(signum) is not signal.SIG_IGN:
        previous[signum] = signal.signal(signum, _raise_stop_signal)
  try:
    yield
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


@contextlib.contextmanager
def stop_signals_deferred(names: Iterable[str] = DEFAULT_STOP_SIGNALS):
  """Holds the stop signals back while active (imports of JAX and the like),
  delivering them on exit: an exception raised inside an extension module's
  initialization would surface as an ImportError with a traceback instead.
  Threads started meanwhile keep them held back, so they reach the main
  thread."""
  signums = _numbers(names)
  held = signal.pthread_sigmask(signal.SIG_BLOCK, signums)
  try:
    yield
  finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, held)


def ignore_stop_signals() -> None:
  """Ignores every stop signal from now on (a process about to exit that
  asked its scheduler to end it, as `scontrol requeue` does)."""
  for signum in _numbers(ALLOWED_STOP_SIGNALS):
    signal.signal(signum, signal.SIG_IGN)


def preemption_service_running() -> bool:
  """Whether JAX's preemption service runs in this job.

  `jax.distributed.initialize` starts it when the config
  `jax_enable_preemption_service` is on at that moment; entry points never
  change the config afterwards, so reading it now tells the same.
  """
  import jax  # pylint: disable=import-outside-toplevel

  return (
      jax.process_count() > 1
      and jax.distributed.is_initialized()
      and bool(jax.config.jax_enable_preemption_service)
  )


class StopRequest:
  """Records the stop signals while active (a context manager) and says at
  which step boundary to stop.

  Args:
    names: the stop signals (`train.stop_signals`). The other stop signals
      that `stopping_at_once` handles get their usual meaning meanwhile.
  """

  def __init__(self, names: Iterable[str] = DEFAULT_STOP_SIGNALS):
    self.signal_name = None
    self._signums = _numbers(check_stop_signals(names))
    self._previous = {}
    self._service = preemption_service_running()

  def __enter__(self):
    # Handlers can only be set from the main thread; elsewhere (a notebook
    # worker thread) signals keep their usual meaning.
    if threading.current_thread() is not threading.main_thread():
      return self
    for signum in _numbers(ALLOWED_STOP_SIGNALS):
      current = signal.getsignal(signum)
      if signum not in self._signums:
        if current is _raise_stop_signal:  # not a stop signal of this run
          self._previous[signum] = signal.signal(signum, _usual_handler(signum))
      elif signum == signal.SIGTERM and self._service:
        continue  # JAX's own handler reports it to the preemption service
      elif current is not signal.SIG_IGN:
        self._previous[signum] = signal.signal(signum, self._record)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def _record(self, signum, frame):
    del frame
    if self.signal_name is None:
      self.signal_name = signal.Signals(signum).name
    if self._service and signum != signal.SIGTERM:
      # To JAX's handler: every process stops at one step.
      os.kill(os.getpid(), signal.SIGTERM)

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop after `step` completed steps. Called by every
    process at every step (the preemption service needs each step)."""
    import jax  # pylint: disable=import-outside-toplevel
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    if self._service:
      return multihost_utils.reached_preemption_sync_point(step)
    if jax.process_count() > 1:  # no service: agree through a tiny allgather
      flags = multihost_utils.process_allgather(
          int(self.signal_name is not None)
      )
      return bool(max(flags))
    return self.signal_name is not None

  def message(self, step: int, num_steps: int) -> str:
    """The one line of `Preempted`."""
    by = self.signal_name or (
        'a preemption notice (SIGTERM, or a stop signal on another process)'
    )
    return (
        f'stopped by {by} at step {step} of {num_steps}; saved a checkpoint '
        f'of step {step}; run the same command again to resume from there'
    )
