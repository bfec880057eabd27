"""Stopping a run cleanly on SIGTERM or SIGINT (a preemption notice, Ctrl-C).

SLURM, Kubernetes and Cloud TPU send SIGTERM some time before they kill a
job. While `StopRequest` is active, SIGTERM and SIGINT only record the
request; the trainer asks `should_stop(step)` at every step boundary, saves a
checkpoint of that step and raises `Preempted`, which entry points turn into
one line and exit status 75 (`errors.Preempted`, EX_TEMPFAIL: "try again"), so a
scheduler requeues the job and the same command resumes at that step.

One process: Python signal handlers set a flag.

Several processes (`jax.distributed`): every process must stop at the same
step, or one would save a step the others never reach. JAX's preemption
service does that: `jax.distributed.initialize` installs its own SIGTERM
handler on every process, a notice on any process reaches all of them, and
`multihost_utils.reached_preemption_sync_point(step)`, asked at every step,
turns True on all processes at the same step. SIGINT is passed on to that
handler as SIGTERM, so Ctrl-C on one process stops the whole job alike. JAX
starts the service in `initialize` when its public config
`jax_enable_preemption_service` is on (the default); with it off, the
processes agree through a tiny allgather of their flags at every step.

A second signal while the checkpoint is written changes nothing: the request
is already recorded and the save runs to its end.
"""

import os
import signal
import threading

import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def preemption_service_running() -> bool:
  """Whether JAX's preemption service runs in this job.

  `jax.distributed.initialize` starts it when the config
  `jax_enable_preemption_service` is on at that moment; entry points never
  change the config afterwards, so reading it now tells the same.
  """
  return (
      jax.process_count() > 1
      and jax.distributed.is_initialized()
      and bool(jax.config.jax_enable_preemption_service)
  )


class StopRequest:
  """Records SIGTERM/SIGINT while active (a context manager) and says at
  which step boundary to stop."""

  def __init__(self):
    self.signal_name = None
    self._previous = {}
    self._service = preemption_service_running()

  def __enter__(self):
    # Handlers can only be set from the main thread; elsewhere (a notebook
    # worker thread) signals keep their usual meaning.
    if threading.current_thread() is threading.main_thread():
      for signum in SIGNALS:
        if signum == signal.SIGTERM and self._service:
          continue  # JAX's own handler reports it to the preemption service
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
      os.kill(
          os.getpid(), signal.SIGTERM
      )  # to JAX's handler: every process stops

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop after `step` completed steps. Called by every
    process at every step (the preemption service needs each step)."""
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
    by = (
        self.signal_name
        or 'a preemption notice (SIGTERM/SIGINT on some process)'
    )
    return (
        f'stopped by {by} at step {step} of {num_steps}; saved a checkpoint of step {step}; '
        'run the same command again to resume from there'
    )
